import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Breaker, BreakerOpenError, Bulkhead, LatencyEstimator, RetryBudget, TokenBucket, backoffMs, type BreakerTransition } from "./index.js";

describe("TokenBucket", () => {
  it("gives the burst at once, then queues at the rate, and refuses a wait past the deadline with retryAfterMs", () => {
    let now = 0;
    const bucket = new TokenBucket(12, 1, () => now);
    expect(bucket.reserve(2_000)).toEqual({ ok: true, waitMs: 0 });
    const waits: number[] = [];
    for (;;) {
      const r = bucket.reserve(2_000);
      if (!r.ok) {
        // The next free slot is after the deadline: refused with when it would be free.
        expect(r.retryAfterMs).toBeGreaterThan(2_000);
        break;
      }
      waits.push(r.waitMs);
    }
    // 100 callers at once with 2 s: burst 1 + 2 s × 12/s = 25 get through, spaced 1/12 s apart.
    expect(waits.length + 1).toBe(25);
    expect(waits[0]).toBeCloseTo(83.33, 1);
    expect(waits.at(-1)).toBeCloseTo(24 * 83.33, 0);
    now += 10_000;
    expect(bucket.reserve(0)).toEqual({ ok: true, waitMs: 0 });
  });
  it("reserves many tokens at once (an LLM request's estimate), and is corrected afterwards", () => {
    let now = 0;
    // 1,000 tokens a minute.
    const bucket = new TokenBucket(1000 / 60, 1000, () => now);
    expect([1, 2, 3].map(() => bucket.reserve(5_000, 300).ok)).toEqual([true, true, true]);
    const fourth = bucket.reserve(5_000, 300);
    // 200 more tokens take 12 s to come back: past the 5 s allowed.
    expect(fourth).toEqual({ ok: false, retryAfterMs: 12_000 });
    // The provider said the third used 100 more than estimated.
    bucket.adjust(100);
    expect(bucket.available).toBeCloseTo(0, 6);
    now += 18_000;
    expect(bucket.reserve(0, 300)).toEqual({ ok: true, waitMs: 0 });
    // An amount above the burst waits for a full bucket and leaves it in debt.
    now += 60_000;
    expect(bucket.reserve(0, 5_000).ok).toBe(true);
    expect(bucket.available).toBe(-4_000);
  });
  it("never saves more than the burst", () => {
    let now = 0;
    const bucket = new TokenBucket(10, 3, () => now);
    now = 60_000;
    expect([1, 2, 3, 4].map(() => bucket.reserve(0).ok)).toEqual([true, true, true, false]);
  });
});

describe("Bulkhead", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("admits N, queues M, rejects beyond, hands a released slot to the next waiter", async () => {
    const bulkhead = new Bulkhead(2, 1);
    const a = await bulkhead.acquire(1_000);
    await bulkhead.acquire(1_000);
    const queued = bulkhead.acquire(1_000);
    await expect(bulkhead.acquire(1_000)).rejects.toMatchObject({ name: "BulkheadRejected", reason: "full" });
    expect([bulkhead.active, bulkhead.queued]).toEqual([2, 1]);
    a();
    a(); // releasing twice is harmless
    const c = await queued;
    expect([bulkhead.active, bulkhead.queued]).toEqual([2, 0]);
    c();
    expect(bulkhead.active).toBe(1);
  });
  it("a queued call gives up when its budget runs out", async () => {
    const bulkhead = new Bulkhead(1, 5);
    await bulkhead.acquire(1_000);
    const waiting = bulkhead.acquire(300);
    const outcome = expect(waiting).rejects.toMatchObject({ reason: "timeout" });
    await vi.advanceTimersByTimeAsync(300);
    await outcome;
    expect(bulkhead.queued).toBe(0);
  });
});

describe("LatencyEstimator", () => {
  const options = { window: 200, minSamples: 20, multiplier: 3, minMs: 50, maxMs: 30_000, defaultMs: 30_000 };
  it("uses the default until there are enough samples, then a multiple of the p99, clamped", () => {
    const estimator = new LatencyEstimator(options);
    expect(estimator.timeoutFor("a")).toBe(30_000);
    // 8% of the calls take 40 ms: the p99 is 40 (the estimate is refreshed every 16 samples).
    for (let i = 0; i < 200; i++) estimator.record("a", i < 184 ? 10 : 40);
    expect(estimator.p99("a")).toBe(40);
    expect(estimator.timeoutFor("a")).toBe(120);
    for (let i = 0; i < 200; i++) estimator.record("b", 1);
    expect(estimator.timeoutFor("b")).toBe(50);
    for (let i = 0; i < 200; i++) estimator.record("c", 60_000);
    expect(estimator.timeoutFor("c")).toBe(30_000);
  });
  it("follows the recent window", () => {
    const estimator = new LatencyEstimator(options);
    for (let i = 0; i < 200; i++) estimator.record("a", 1_000);
    for (let i = 0; i < 232; i++) estimator.record("a", 10);
    expect(estimator.p99("a")).toBe(10);
  });
});

describe("retries", () => {
  it("a budget keeps retries under reserve + ratio × requests, however many fail", () => {
    const budget = new RetryBudget({ ratio: 0.2, reserve: 5 });
    let retries = 0;
    for (let i = 0; i < 1_000; i++) {
      budget.deposit();
      while (budget.withdraw()) retries++;
    }
    expect(retries).toBeLessThanOrEqual(5 + 0.2 * 1_000);
    expect(retries).toBeGreaterThan(0.2 * 1_000 - 1);
  });
  it("backoff is exponential with full jitter, capped", () => {
    expect([1, 2, 3, 4, 10].map((n) => backoffMs(n, 50, 1_000, () => 1))).toEqual([50, 100, 200, 400, 1_000]);
    expect(backoffMs(3, 50, 1_000, () => 0)).toBe(0);
  });
});

describe("Breaker", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const fault = new Error("connection refused");
  const notAFault = Object.assign(new Error("bad arguments"), { fault: false });
  const make = (transitions: BreakerTransition[]) =>
    new Breaker(
      "e#0",
      { volumeThreshold: 3, errorPercentage: 50, windowMs: 30_000, recoveryMs: 5_000 },
      (err) => (err as { fault?: boolean }).fault !== false,
      (t) => transitions.push(t),
    );

  it("opens after the threshold of faults, fails fast, lets one probe through after recovery, closes on its success", async () => {
    const transitions: BreakerTransition[] = [];
    const breaker = make(transitions);
    for (let i = 0; i < 3; i++) await expect(breaker.run(() => Promise.reject(fault))).rejects.toBe(fault);
    expect(breaker.state).toBe("open");
    let ran = 0;
    await expect(breaker.run(async () => ran++)).rejects.toBeInstanceOf(BreakerOpenError);
    expect(ran).toBe(0);
    expect(breaker.rejecting).toBe(true);

    await vi.advanceTimersByTimeAsync(5_000);
    expect(breaker.state).toBe("half-open");
    let release!: () => void;
    const probe = breaker.run(() => new Promise<string>((r) => (release = () => r("ok"))));
    // While the probe is out, everyone else is still refused.
    await expect(breaker.run(async () => ran++)).rejects.toBeInstanceOf(BreakerOpenError);
    release();
    await expect(probe).resolves.toBe("ok");
    expect(breaker.state).toBe("closed");
    expect(transitions.map((t) => `${t.from}→${t.to}`)).toEqual(["closed→open", "open→half-open", "half-open→closed"]);
    expect(transitions[0]!.reason).toMatch(/connection refused/);
    breaker.shutdown();
  });

  it("a failed probe opens it again", async () => {
    const transitions: BreakerTransition[] = [];
    const breaker = make(transitions);
    for (let i = 0; i < 3; i++) await breaker.run(() => Promise.reject(fault)).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(5_000);
    await expect(breaker.run(() => Promise.reject(fault))).rejects.toBe(fault);
    expect(breaker.state).toBe("open");
    expect(transitions.at(-1)?.reason).toMatch(/probe failed/);
    breaker.shutdown();
  });

  it("a probe that ends in the caller's mistake does not close it: it counts as a failed probe", async () => {
    const transitions: BreakerTransition[] = [];
    const breaker = make(transitions);
    for (let i = 0; i < 3; i++) await breaker.run(() => Promise.reject(fault)).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(breaker.state).toBe("half-open");
    await expect(breaker.run(() => Promise.reject(notAFault))).rejects.toBe(notAFault);
    expect(breaker.state).toBe("open");
    expect(transitions.map((t) => `${t.from}→${t.to}`)).toEqual(["closed→open", "open→half-open", "half-open→open"]);
    // The next probe that succeeds closes it.
    await vi.advanceTimersByTimeAsync(5_000);
    await expect(breaker.run(async () => "ok")).resolves.toBe("ok");
    expect(breaker.state).toBe("closed");
    breaker.shutdown();
  });

  it("opens from outside at once, and goes half-open from outside without waiting out the recovery time", async () => {
    const transitions: BreakerTransition[] = [];
    const breaker = make(transitions);
    breaker.open("health prober: unhealthy");
    expect(breaker.state).toBe("open");
    let ran = 0;
    await expect(breaker.run(async () => ran++)).rejects.toBeInstanceOf(BreakerOpenError);
    breaker.halfOpen("health prober: healthy");
    await vi.advanceTimersByTimeAsync(0);
    expect(breaker.state).toBe("half-open");
    await expect(breaker.run(async () => "probe")).resolves.toBe("probe");
    expect(breaker.state).toBe("closed");
    expect(transitions.map((t) => `${t.from}→${t.to}: ${t.reason}`)).toEqual([
      "closed→open: health prober: unhealthy",
      "open→half-open: health prober: healthy",
      "half-open→closed: probe succeeded",
    ]);
    breaker.shutdown();
  });

  it("errors that are not backend faults never open it", async () => {
    const breaker = make([]);
    for (let i = 0; i < 20; i++) await expect(breaker.run(() => Promise.reject(notAFault))).rejects.toBe(notAFault);
    expect(breaker.state).toBe("closed");
    breaker.shutdown();
  });
});

describe("percentile", () => {
  it("is the nearest-rank quantile, the same as sorting would give", async () => {
    const { percentile } = await import("./latency.js");
    const sorted = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)];
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(Math.random() * 300);
      const xs = Array.from({ length: n }, () => Math.round(Math.random() * 1000));
      for (const q of [0.5, 0.9, 0.99, 1]) expect(percentile(xs, q)).toBe(sorted(xs, q));
    }
  });
});
