import { describe, expect, it } from "vitest";
import type { ToolDescriptor } from "@toolbus/protocol";
import { ToolIndex, checkToolCall, toolsVersion } from "./index.js";

const tools: ToolDescriptor[] = [
  {
    name: "sum",
    inputSchema: {
      $schema: "http://json-schema.org/draft-07/schema#",
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" }, opts: { type: "object", properties: { round: { type: "boolean" } } } },
      required: ["a", "b"],
      additionalProperties: false,
    },
  },
  { name: "anything", inputSchema: { type: "object" } },
];

describe("ToolIndex", () => {
  const index = new ToolIndex(tools);
  it("names every violating field", () => {
    const check = index.check("sum", { a: "1", opts: { round: "yes" }, extra: 1 });
    expect(check.ok).toBe(false);
    if (check.ok) return;
    expect(check.issues.map((i) => `${i.field}:${i.type}`).sort()).toEqual(
      ["arguments.a:type", "arguments.b:required", "arguments.extra:additionalProperties", "arguments.opts.round:type"].sort(),
    );
  });
  it("accepts good arguments", () => {
    expect(index.check("sum", { a: 1, b: 2 })).toEqual({ ok: true });
    expect(index.check("anything", { whatever: [1] })).toEqual({ ok: true });
  });
  it("has a version that ignores key order", () => {
    expect(toolsVersion([{ inputSchema: { type: "object" }, name: "x" }])).toBe(toolsVersion([{ name: "x", inputSchema: { type: "object" } }]));
  });
  it("checkToolCall: unknown tool lists the known ones", () => {
    const reply = checkToolCall(index, { backend: "m", tool: "nope", arguments: {} });
    expect(reply?.error).toMatchObject({ code: "UNKNOWN_TOOL", details: { known: ["sum", "anything"] } });
    expect(checkToolCall(index, { backend: "m", tool: "sum", arguments: { a: 1, b: 2 } })).toBeUndefined();
  });
});
