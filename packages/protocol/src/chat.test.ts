import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CHAT_PARTITIONS, ChatEventSchema, chatFileName, chatPartitionOf, chatSubject, conversationOfFile, newEventId } from "./chat.js";

const conversationId = fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/);

describe("chat events", () => {
  it("file names are lower case, never shared by two ids (even ignoring case), and give the id back", () => {
    fc.assert(
      fc.property(conversationId, conversationId, (a, b) => {
        const fa = chatFileName(a);
        expect(fa).toBe(fa.toLowerCase());
        expect(conversationOfFile(fa)).toBe(a);
        if (a !== b) expect(fa.toLowerCase()).not.toBe(chatFileName(b).toLowerCase());
      }),
    );
    expect(chatFileName("Conv_1")).toBe("_conv__1.jsonl");
    expect(conversationOfFile("x.jsonl.lock")).toBeUndefined();
    expect(() => chatFileName("../etc")).toThrow(TypeError);
    expect(() => chatSubject("a.b")).toThrow(TypeError);
  });

  it("a conversation always maps to the same partition, and the partitions are all used", () => {
    const seen = new Set<number>();
    for (let i = 0; i < 1_000; i++) {
      const p = chatPartitionOf(`conv-${i}`);
      expect(p).toBe(chatPartitionOf(`conv-${i}`));
      expect(chatSubject(`conv-${i}`)).toBe(`toolbus.v1.chat.${p}.conv-${i}`);
      seen.add(p);
    }
    expect(seen.size).toBe(CHAT_PARTITIONS);
  });

  it("event ids are UUIDv7s that sort in the order they were made, even within a millisecond", () => {
    const ids = Array.from({ length: 10_000 }, () => newEventId());
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    for (const id of ids.slice(0, 10)) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // The time (ms) is in the first 48 bits.
    const before = Date.now();
    const ms = Number.parseInt(newEventId().replace(/-/g, "").slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(Date.now() + 5);
  });

  it("timestamps must be UTC with Z; types are lower-case words", () => {
    const event = { id: newEventId(), conversationId: "c", type: "tool_call", timestamp: new Date().toISOString(), payload: {} };
    expect(ChatEventSchema.safeParse(event).success).toBe(true);
    expect(ChatEventSchema.safeParse({ ...event, timestamp: "2026-11-22T10:00:00+01:00" }).success).toBe(false);
    expect(ChatEventSchema.safeParse({ ...event, timestamp: "2026-11-22 10:00:00" }).success).toBe(false);
    expect(ChatEventSchema.safeParse({ ...event, type: "Tool Call" }).success).toBe(false);
  });
});
