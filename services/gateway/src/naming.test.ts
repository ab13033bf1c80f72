import { describe, expect, it } from "vitest";
import { nameUnion, type NamingOptions } from "./naming.js";

const tools = (...names: string[]) => names.map((name) => ({ name }));
const backends = new Map([
  ["web", tools("fetch", "search")],
  ["files", tools("read", "search")],
]);
const opts = (o: Partial<NamingOptions>): NamingOptions => ({ prefix: "always", separator: "__", aliases: {}, ...o });

describe("nameUnion", () => {
  it("always: every tool is <backend><separator><tool>, an alias replacing the backend's name", () => {
    const union = nameUnion(backends, opts({ aliases: { files: "fs" }, separator: "." }));
    expect([...union.keys()].sort()).toEqual(["fs.read", "fs.search", "web.fetch", "web.search"]);
    expect(union.get("fs.read")).toMatchObject({ backend: "files", original: "read" });
  });

  it("on-clash: only names two backends share are prefixed", () => {
    const union = nameUnion(backends, opts({ prefix: "on-clash" }));
    expect([...union.keys()].sort()).toEqual(["fetch", "files__search", "read", "web__search"]);
  });

  it("never: a shared name goes to the first backend by name, the other is reported", () => {
    const dropped: string[] = [];
    const union = nameUnion(backends, opts({ prefix: "never" }), (name, backend, kept) => dropped.push(`${name}:${backend}:${kept}`));
    expect(union.get("search")?.backend).toBe("files");
    expect(dropped).toEqual(["search:web:files"]);
  });
});
