import { describe, expect, it } from "vitest";
import { Cancellation } from "./cancellation.js";

describe("Cancellation", () => {
  it("keeps few controllers however many calls are made, and aborts exactly the ones with calls out", () => {
    const cancellation = new Cancellation();
    for (let i = 0; i < 100_000; i++) cancellation.release(cancellation.acquire());
    expect(cancellation.size).toBeLessThanOrEqual(2);
    const held = Array.from({ length: 200 }, () => cancellation.acquire());
    expect(new Set(held).size).toBeGreaterThanOrEqual(3); // shared, 64 calls at most each
    for (const c of held.slice(0, 100)) cancellation.release(c);
    cancellation.abortAll();
    expect(held.slice(100).every((c) => c.signal.aborted)).toBe(true);
  });
});
