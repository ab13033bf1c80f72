import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CallRegistry } from "./cancellation.js";
import { classify } from "@toolbus/mcp-http";

describe("CallRegistry", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("holds nothing once calls end, however many were made", () => {
    const calls = new CallRegistry();
    for (let i = 0; i < 100_000; i++) calls.end(calls.start(`r${i}`, 1_000));
    expect(calls.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("aborts a call at its deadline, whatever else happened, as DEADLINE_EXCEEDED", async () => {
    const calls = new CallRegistry();
    const c = calls.start("r", 1_000);
    await vi.advanceTimersByTimeAsync(999);
    expect(c.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(c.signal.aborted).toBe(true);
    expect(classify(c.signal.reason, { sessionSent: false }).code).toBe("DEADLINE_EXCEEDED");
    calls.end(c);
  });

  it("a client's cancel aborts exactly the calls with that request id, as CANCELLED", () => {
    const calls = new CallRegistry();
    const [a, b, a2] = [calls.start("a", 10_000), calls.start("b", 10_000), calls.start("a", 10_000)];
    expect(calls.cancel("a", "aborted by the client")).toBe(2);
    expect([a.signal.aborted, b.signal.aborted, a2.signal.aborted]).toEqual([true, false, true]);
    expect(classify(a.signal.reason, { sessionSent: false }).code).toBe("CANCELLED");
    expect(calls.cancel("nobody", "x")).toBe(0);
    // A cancel that arrives before its call (it took a shorter way) still cancels it, for a while.
    const now = Date.now();
    expect(calls.cancel("early", "aborted by the client", now)).toBe(0);
    const early = calls.start("early", 10_000);
    expect(early.signal.aborted).toBe(true);
    expect(classify(early.signal.reason, { sessionSent: false }).code).toBe("CANCELLED");
    calls.end(early);
    const again = calls.start("early", 10_000);
    expect(again.signal.aborted).toBe(false); // once only
    calls.end(again);
    calls.abortAll("stopping");
    expect(b.signal.aborted).toBe(true);
    for (const c of [a, b, a2]) calls.end(c);
    expect(calls.size).toBe(0);
  });
});
