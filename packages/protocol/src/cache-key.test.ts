import { describe, expect, it } from "vitest";
import { cacheKey, cacheKeyPrefix, parseCacheKey } from "./cache-key.js";

describe("cacheKey", () => {
  it("is the same for the same arguments in any key order, and differs with any of its parts", () => {
    const key = cacheKey("docs", "read", { path: "/a", opts: { depth: 1, all: true } });
    expect(cacheKey("docs", "read", { opts: { all: true, depth: 1 }, path: "/a" })).toBe(key);
    expect(cacheKey("docs", "read", { path: "/b", opts: { depth: 1, all: true } })).not.toBe(key);
    expect(cacheKey("docs", "list", { path: "/a", opts: { depth: 1, all: true } })).not.toBe(key);
    expect(cacheKey("wiki", "read", { path: "/a", opts: { depth: 1, all: true } })).not.toBe(key);
    expect(cacheKey("docs", "read", { path: "/a", opts: { depth: 1, all: true } }, ["alice"])).not.toBe(key);
    expect(cacheKey("docs", "read", { path: "/a", opts: { depth: 1, all: true } }, ["alice"])).not.toBe(
      cacheKey("docs", "read", { path: "/a", opts: { depth: 1, all: true } }, ["bob"]),
    );
  });

  it("is a valid KV key under its backend's and tool's prefix, whatever the tool's name holds", () => {
    for (const tool of ["read", "fs.read_file", "a b/c*>", "ünïcode"]) {
      const key = cacheKey("docs", tool, {});
      expect(key).toMatch(/^[-/_=.a-zA-Z0-9]+$/);
      expect(key.startsWith(cacheKeyPrefix("docs", tool))).toBe(true);
      expect(key.startsWith(cacheKeyPrefix("docs"))).toBe(true);
      expect(key.split(".")).toHaveLength(3);
      expect(parseCacheKey(key)).toEqual({ backend: "docs", tool });
    }
    // One tool's prefix never covers another tool whose name starts the same way.
    expect(cacheKey("docs", "readme", {}).startsWith(cacheKeyPrefix("docs", "read"))).toBe(false);
  });

  it("refuses a backend name that is not a subject token", () => {
    expect(() => cacheKeyPrefix("a.b")).toThrow(TypeError);
    expect(parseCacheKey("not a key")).toBeUndefined();
  });
});
