import { describe, expect, it } from "vitest";
import { cacheKey } from "@toolbus/protocol";
import { MemoryTier, decodeShared, encodeShared, type Entry } from "./tiers.js";

const entry = (result: string, ttlMs = 60_000): Entry => ({ result, endpoint: "b#0", expiresAt: Date.now() + ttlMs });

describe("MemoryTier (L1)", () => {
  it("keeps an entry until its own TTL passes", async () => {
    const memory = new MemoryTier({ maxEntries: 10, maxBytes: 1_000_000 });
    memory.set("k1", entry('{"content":[]}', 40));
    memory.set("k2", entry('{"content":[]}', 60_000));
    memory.set("k3", entry('{"content":[]}', -1));
    expect(memory.get("k1")).toBeDefined();
    expect(memory.get("k3")).toBeUndefined();
    await new Promise((r) => setTimeout(r, 60));
    expect(memory.get("k1")).toBeUndefined();
    expect(memory.get("k2")).toBeDefined();
  });

  it("is bounded by entries and by bytes, evicting the least recently used and counting it", () => {
    const byCount = new MemoryTier({ maxEntries: 2, maxBytes: 1_000_000 });
    byCount.set("a", entry("1"));
    byCount.set("b", entry("2"));
    byCount.get("a");
    byCount.set("c", entry("3"));
    expect(byCount.get("b")).toBeUndefined();
    expect(byCount.get("a")).toBeDefined();
    expect(byCount.evictions).toBe(1);

    const byBytes = new MemoryTier({ maxEntries: 1_000, maxBytes: 10_000 });
    for (let i = 0; i < 10; i++) byBytes.set(`k${i}`, entry("x".repeat(1_000)));
    expect(byBytes.bytes).toBeLessThanOrEqual(10_000);
    expect(byBytes.entries).toBeLessThan(10);
    expect(byBytes.evictions).toBe(10 - byBytes.entries);
  });

  it("drops a backend's or one tool's entries, and nothing else", () => {
    const memory = new MemoryTier({ maxEntries: 100, maxBytes: 1_000_000 });
    const keys = {
      read: cacheKey("docs", "read", { p: 1 }),
      readme: cacheKey("docs", "readme", { p: 1 }),
      other: cacheKey("wiki", "read", { p: 1 }),
    };
    for (const key of Object.values(keys)) memory.set(key, entry("{}"));
    expect(memory.invalidate("docs", "read")).toBe(1);
    expect(memory.get(keys.readme)).toBeDefined();
    expect(memory.invalidate("docs")).toBe(1);
    expect(memory.get(keys.other)).toBeDefined();
    expect(memory.entries).toBe(1);
  });
});

describe("the shared tier's value format", () => {
  it("round-trips, keeping the result's JSON byte for byte", () => {
    const result = '{"content":[{"type":"text","text":"a\\nb"}],"structuredContent":{"x":1}}';
    const value = { result, endpoint: "docs#1", expiresAt: 1_700_000_000_000 };
    expect(decodeShared(encodeShared(value))).toEqual(value);
    expect(decodeShared("no newline")).toBeUndefined();
    expect(decodeShared('{"endpoint":1}\n{}')).toBeUndefined();
    expect(decodeShared("not json\n{}")).toBeUndefined();
  });
});
