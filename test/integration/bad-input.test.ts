import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers as natsHeaders, type NatsConnection } from "nats";
import type { ToolbusClient } from "@toolbus/client";
import { ErrorCode, Headers, subjects, type ToolCallReply } from "@toolbus/protocol";
import { everythingStdio } from "../helpers/mcp.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

const MAX_REQUEST_BYTES = 4096;

describe("bad input gets a typed error and the router keeps serving", () => {
  let stack: Stack;
  let nc: NatsConnection;
  let client: ToolbusClient;

  beforeAll(async () => {
    stack = await startStack({ limits: { maxRequestBytes: MAX_REQUEST_BYTES }, backends: { everything: everythingStdio() } });
    client = stack.client;
    nc = client.nc;
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  /** Send raw bytes with raw headers, as a client in any language could. */
  async function raw(body: string | Uint8Array, budget: string | null = "5000", subject = subjects.toolCall()): Promise<ToolCallReply> {
    const h = natsHeaders();
    if (budget !== null) h.set(Headers.TimeoutMs, budget);
    const msg = await nc.request(subject, typeof body === "string" ? new TextEncoder().encode(body) : body, { timeout: 5_000, headers: h });
    return msg.json<ToolCallReply>();
  }
  const call = (over: Record<string, unknown> = {}) => JSON.stringify({ backend: "everything", tool: "echo", arguments: { message: "hi" }, ...over });

  async function expectError(reply: ToolCallReply, code: ErrorCode): Promise<Extract<ToolCallReply, { ok: false }>["error"]> {
    expect(reply.ok, JSON.stringify(reply)).toBe(false);
    if (reply.ok) throw new Error("unreachable");
    expect(reply.error.code).toBe(code);
    expect(reply.error.message.length).toBeGreaterThan(10);
    // After every bad request the router still answers a good one.
    const good = await raw(call());
    expect(good.ok).toBe(true);
    return reply.error;
  }

  for (const subject of [subjects.toolCall(), subjects.backendCall("everything")]) {
    describe(`on ${subject}`, () => {
      it("body that is not JSON → BAD_REQUEST", async () => {
        const error = await expectError(await raw("{not json", "5000", subject), ErrorCode.BAD_REQUEST);
        expect(error.message).toMatch(/not valid JSON/);
        expect(error.retryable).toBe(false);
      });

      it("missing fields → BAD_REQUEST naming each field", async () => {
        const error = await expectError(await raw(JSON.stringify({ arguments: {} }), "5000", subject), ErrorCode.BAD_REQUEST);
        const fields = (error.details?.validationErrors as Array<{ field: string }>).map((e) => e.field).sort();
        expect(fields).toEqual(["backend", "tool"]);
      });

      it("unknown tool → UNKNOWN_TOOL listing the known ones", async () => {
        const error = await expectError(await raw(call({ tool: "no-such-tool" }), "5000", subject), ErrorCode.UNKNOWN_TOOL);
        expect(error.details?.known).toContain("echo");
      });

      it("arguments that violate the tool's schema → VALIDATION_FAILED naming each field", async () => {
        const error = await expectError(await raw(call({ tool: "get-sum", arguments: { a: "one" } }), "5000", subject), ErrorCode.VALIDATION_FAILED);
        const issues = error.details?.validationErrors as Array<{ field: string; type: string }>;
        expect(issues).toEqual(
          expect.arrayContaining([
            expect.objectContaining({ field: "arguments.a", type: "type" }),
            expect.objectContaining({ field: "arguments.b", type: "required" }),
          ]),
        );
      });

      it("payload over the size cap → PAYLOAD_TOO_LARGE", async () => {
        const error = await expectError(
          await raw(call({ arguments: { message: "x".repeat(MAX_REQUEST_BYTES) } }), "5000", subject),
          ErrorCode.PAYLOAD_TOO_LARGE,
        );
        expect(error.details).toMatchObject({ limitBytes: MAX_REQUEST_BYTES });
      });

      it.each([
        ["missing", null, ErrorCode.BAD_REQUEST, /required/],
        ["zero", "0", ErrorCode.DEADLINE_EXCEEDED, /already spent/],
        ["negative", "-5", ErrorCode.BAD_REQUEST, /negative/],
        ["not a number", "soon", ErrorCode.BAD_REQUEST, /integer/],
        ["a fraction", "1.5", ErrorCode.BAD_REQUEST, /integer/],
        ["absurdly large", "999999999999", ErrorCode.BAD_REQUEST, /maximum/],
      ])("budget header %s → %s", async (_name, budget, code, message) => {
        const error = await expectError(await raw(call(), budget, subject), code);
        expect(error.message).toMatch(message);
      });
    });
  }

  it("unknown backend → UNKNOWN_BACKEND listing the known ones", async () => {
    const error = await expectError(await raw(call({ backend: "nope" })), ErrorCode.UNKNOWN_BACKEND);
    expect(error.details?.known).toEqual(["everything"]);
  });

  it("a backend name that cannot be a subject token → BAD_REQUEST", async () => {
    const error = await expectError(await raw(call({ backend: "../etc" })), ErrorCode.BAD_REQUEST);
    expect(error.details?.validationErrors).toEqual([expect.objectContaining({ field: "backend" })]);
  });

  it("a body for another backend sent to a caller's subject → BAD_REQUEST", async () => {
    await expectError(await raw(call({ backend: "other" }), "5000", subjects.backendCall("everything")), ErrorCode.BAD_REQUEST);
  });

  it("the client library surfaces wire errors as ToolbusError with the code", async () => {
    await expect(client.callTool("everything", "get-sum", { a: 1 }, { timeoutMs: 2_000 })).rejects.toMatchObject({
      name: "ToolbusError",
      code: ErrorCode.VALIDATION_FAILED,
    });
    await expect(client.callTool("ghost", "echo", {}, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: ErrorCode.UNKNOWN_BACKEND });
  });
});
