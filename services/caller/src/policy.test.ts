import { ErrorCode as McpErrorCode, McpError, type CallToolResult as McpCallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { compileConfig, type BackendConfig } from "@toolbus/config";
import { ErrorCode, type ErrorReply, type ToolCallOkReply, type ToolDescriptor } from "@toolbus/protocol";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CallOptions, Endpoint } from "./endpoint.js";
import { EndpointDownError, abortReason } from "@toolbus/mcp-http";
import { CallPolicy, isSafeToRepeat } from "./policy.js";
import { REPLY_MARGIN_MS } from "./shared.js";

describe("isSafeToRepeat", () => {
  const tool = (annotations?: Record<string, boolean>) => ({ name: "t", inputSchema: { type: "object" as const }, ...(annotations ? { annotations } : {}) });
  it("follows the annotations, and config overrides them either way", () => {
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ idempotentHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ destructiveHint: true }), undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), undefined)).toBe(false);
    expect(isSafeToRepeat(undefined, undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), { idempotent: true })).toBe(true);
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), { readOnly: false })).toBe(false);
  });
});

// Everything below runs on vitest's fake timers, which fake performance.now too: the policy, the
// token bucket, the bulkhead's queue, the backoff, opossum's windows and the fake endpoint share one
// clock, so every time asserted is exact and no test sleeps.

/** What one call to a fake endpoint does: answer (or fail with `error`) after `afterMs` of fake time. */
interface Step {
  afterMs: number;
  error?: unknown;
  /** Rejected with on an abort instead of the signal's reason (a connection that closed as the cancel went out). */
  abortError?: unknown;
}
const ok = (afterMs = 0): Step => ({ afterMs });
const fail = (error: unknown, afterMs = 0): Step => ({ afterMs, error });
/** Never answers: ends only at the call's timeout or when its signal aborts. */
const hang = (abortError?: unknown): Step => ({ afterMs: Number.POSITIVE_INFINITY, ...(abortError === undefined ? {} : { abortError }) });

// Failures from the real taxonomy (faults.ts).
const internalError = () => new McpError(McpErrorCode.InternalError, "boom");
const refused = () => new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" }) });
const reset = () => new TypeError("fetch failed", { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) });

interface RecordedCall {
  name: string;
  options: CallOptions;
  /** Fake time (ms since the test started) the call reached the endpoint. */
  at: number;
}

let t0 = 0;
/** Fake ms since the test started. */
const clock = (): number => performance.now() - t0;

/**
 * An endpoint whose calls do what the test scripted. Like the MCP SDK's client, a call rejects with
 * RequestTimeout once `timeoutMs` passes and with the signal's reason when the signal aborts.
 */
class FakeEndpoint implements Endpoint {
  live = true;
  readonly calls: RecordedCall[] = [];
  readonly #steps: Step[] = [];
  #inFlight = 0;

  constructor(
    readonly id: string,
    /** What calls do once the scripted steps are used up. */
    public otherwise: Step = ok(),
  ) {}

  get inFlight(): number {
    return this.#inFlight;
  }
  /** The next calls do these, in order. */
  script(...steps: Step[]): this {
    this.#steps.push(...steps);
    return this;
  }
  retryAfterMs(): number | undefined {
    return this.live ? undefined : 100;
  }
  start(): void {}
  wake(): void {}
  async ping(): Promise<number> {
    return 0;
  }
  async listTools(): Promise<Tool[]> {
    return [];
  }
  async request(): Promise<Record<string, unknown>> {
    return {};
  }
  async close(): Promise<void> {}

  callTool(name: string, _args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult> {
    const step = this.#steps.shift() ?? this.otherwise;
    this.calls.push({ name, options, at: clock() });
    this.#inFlight++;
    return new Promise<McpCallToolResult>((resolve, reject) => {
      const { signal } = options;
      const timers: NodeJS.Timeout[] = [];
      const settle = (outcome: () => void): void => {
        for (const timer of timers) clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.#inFlight--;
        outcome();
      };
      const onAbort = (): void => settle(() => reject(step.abortError ?? signal.reason));
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
      const timeout = new McpError(McpErrorCode.RequestTimeout, "Request timed out", { timeout: options.timeoutMs });
      timers.push(setTimeout(() => settle(() => reject(timeout)), options.timeoutMs));
      const answer = (): void => settle(() => (step.error === undefined ? resolve({ content: [{ type: "text", text: `${name} done` }] }) : reject(step.error)));
      if (step.afterMs === 0) answer();
      else if (Number.isFinite(step.afterMs)) timers.push(setTimeout(answer, step.afterMs));
    });
  }
}

/** An mcp-stdio backend "fake" on the local profile, with `overrides` (policy fields) on top. */
function backend(overrides: Record<string, unknown> = {}): BackendConfig {
  const raw = { log: { level: "silent" }, admin: { port: -1 }, backends: { fake: { kind: "mcp-stdio", command: "fake-mcp", ...overrides } } };
  return compileConfig(raw, { baseDir: "/", source: "(policy.test)" }).backends.fake!;
}

const idempotent: ToolDescriptor = { name: "echo", inputSchema: { type: "object" }, annotations: { idempotentHint: true } };

type Reply = ToolCallOkReply | ErrorReply;

interface Harness {
  policy: CallPolicy;
  /** Breaker transitions as "endpoint from→to". */
  transitions: string[];
  /** Start a call of `tool` with `budgetMs` from now. */
  call(budgetMs: number, options?: { tool?: ToolDescriptor; signal?: AbortSignal }): Promise<Reply>;
}

const opened: CallPolicy[] = [];

/** A policy over `endpoints` on the fake clock; the backoff's jitter is `random` (the maximum backoff by default). */
function harness(config: BackendConfig, endpoints: FakeEndpoint[], random: () => number = () => 1): Harness {
  const transitions: string[] = [];
  const policy = new CallPolicy(config, endpoints, { onBreaker: (e, t) => transitions.push(`${e.id} ${t.from}→${t.to}`) }, clock, random);
  opened.push(policy);
  return {
    policy,
    transitions,
    call: (budgetMs, options = {}) =>
      policy.execute(
        { backend: "fake", tool: options.tool?.name ?? "echo", arguments: {} },
        clock() + budgetMs,
        options.tool,
        options.signal ?? new AbortController().signal,
      ),
  };
}

/** A call's reply and the fake time it came at, once it has. */
interface Tracked {
  reply?: Reply;
  at?: number;
}
function track(promise: Promise<Reply>): Tracked {
  const tracked: Tracked = {};
  void promise.then((reply) => Object.assign(tracked, { reply, at: clock() }));
  return tracked;
}

/** Let `ms` of fake time pass (timers firing in order); the call must have been answered by then. */
async function within(ms: number, promise: Promise<Reply>): Promise<Reply & { at: number }> {
  const tracked = track(promise);
  await vi.advanceTimersByTimeAsync(ms);
  if (!tracked.reply) throw new Error(`no reply after ${ms} ms of fake time`);
  return { ...tracked.reply, at: tracked.at! };
}

/** Run `n` calls of `ms` each, one after another, so the tool has latency samples (and a p99). */
async function warmUp(h: Harness, endpoint: FakeEndpoint, n: number, ms: number): Promise<void> {
  endpoint.script(...Array.from({ length: n }, () => ok(ms)));
  for (let i = 0; i < n; i++) expect((await within(ms, h.call(5_000))).ok).toBe(true);
}

const code = (reply: Reply): string => (reply.ok ? "ok" : reply.error.code);
const error = (reply: Reply): ErrorReply["error"] => {
  if (reply.ok) throw new Error(`expected an error, got ${JSON.stringify(reply)}`);
  return reply.error;
};

beforeEach(() => {
  vi.useFakeTimers();
  t0 = performance.now();
});
afterEach(() => {
  for (const policy of opened.splice(0)) policy.close();
  vi.useRealTimers();
});

describe("CallPolicy: policy order (deadline → breaker → bulkhead → rate limit)", () => {
  it("an expired deadline is answered DEADLINE_EXCEEDED without calling the endpoint", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend(), [ep]);
    // What is left after the reply margin is the budget: nothing left, no call.
    for (const budget of [REPLY_MARGIN_MS, 0, -100]) {
      const reply = await h.call(budget);
      expect(error(reply)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, message: "the deadline passed before the backend was called" });
    }
    expect(ep.calls).toEqual([]);
    // One ms over the margin is enough to try, with that 1 ms as the timeout.
    expect(code(await h.call(REPLY_MARGIN_MS + 1))).toBe("ok");
    expect(ep.calls.map((c) => c.options.timeoutMs)).toEqual([1]);
  });

  it("an open breaker answers CIRCUIT_OPEN without taking a bulkhead slot or a rate-limit token", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ breaker: { recovery: "100ms" }, bulkhead: { maxConcurrent: 1, maxQueue: 0 }, rateLimit: { rate: 1, burst: 2 } }), [ep]);
    // One call holds the only slot (and takes one of the two tokens) for 50 ms; then the breaker opens.
    ep.script(ok(50));
    const first = track(h.call(5_000));
    await vi.advanceTimersByTimeAsync(0);
    expect(ep.calls).toHaveLength(1);
    h.policy.breakers.get(ep)!.open();
    // With the bulkhead full, the breaker still answers first: CIRCUIT_OPEN, not OVERLOADED.
    for (let i = 0; i < 5; i++) {
      expect(error(await h.call(5_000))).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN, retryAfterMs: 100, details: { endpoints: ["fake#0"] } });
    }
    const bulkhead = h.policy.bulkheads.get(ep)!;
    expect([bulkhead.active, bulkhead.queued]).toEqual([1, 0]);
    expect(ep.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(first.reply?.ok).toBe(true);
    // Half-open after 100 ms: the probe gets the second token (0.1 refilled since), so the five
    // refused calls took none. The probe succeeds and closes the breaker.
    expect(h.transitions).toEqual(["fake#0 closed→open", "fake#0 open→half-open"]);
    expect(code(await h.call(5_000))).toBe("ok");
    expect(h.transitions.at(-1)).toBe("fake#0 half-open→closed");
    // The bucket is now empty (0.1 token, the next one 900 ms away): refused within a 500 ms budget.
    expect(error(await h.call(500))).toMatchObject({ code: ErrorCode.RATE_LIMITED });
    expect(ep.calls).toHaveLength(2);
  });

  it("a full bulkhead answers OVERLOADED at once; a queued call waits for a slot no longer than its deadline", async () => {
    const ep = new FakeEndpoint("fake#0", ok(1_000));
    const h = harness(backend({ bulkhead: { maxConcurrent: 1, maxQueue: 1 } }), [ep]);
    const running = track(h.call(5_000));
    const queued = track(h.call(200));
    const full = track(h.call(5_000));
    await vi.advanceTimersByTimeAsync(0);
    expect(full.at).toBe(0);
    expect(error(full.reply!)).toMatchObject({ code: ErrorCode.OVERLOADED, retryable: true, details: { endpoint: "fake#0" } });
    expect(error(full.reply!).message).toMatch(/1 calls in flight and 1 queued \(limits 1 \+ 1\)/);
    // The queued call gives up when its budget (less the reply margin) is gone, long before the slot frees.
    await vi.advanceTimersByTimeAsync(1_000);
    expect(queued.at).toBe(200 - REPLY_MARGIN_MS);
    expect(error(queued.reply!)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, message: "waited for a free slot on fake#0 until the deadline" });
    expect(running).toMatchObject({ at: 1_000, reply: { ok: true } });
    expect(ep.calls).toHaveLength(1);
  });

  it("a rate-limit wait past the deadline is answered RATE_LIMITED at once, with when a token will be free", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ rateLimit: { rate: 1, burst: 1 } }), [ep]);
    expect(code(await h.call(5_000))).toBe("ok"); // takes the only token: the next is 1 000 ms away
    const refused = track(h.call(500));
    const scheduled = track(h.call(2_000));
    await vi.advanceTimersByTimeAsync(0);
    expect(refused.at).toBe(0);
    expect(error(refused.reply!)).toMatchObject({ code: ErrorCode.RATE_LIMITED, retryAfterMs: 1_000, details: { backend: "fake" } });
    // A budget with room for the wait is scheduled: the call goes out when its token is due. The refused
    // call took no token, or this one would wait 2 000 ms.
    expect(ep.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ep.calls.map((c) => c.at)).toEqual([0, 1_000]);
    expect(scheduled).toMatchObject({ at: 1_000, reply: { ok: true } });
  });
});

describe("CallPolicy: retry", () => {
  // The jitter is full: a pause is round(random × min(maxBackoff, initialBackoff × 2^(retry-1))), here
  // initialBackoff 50 ms: up to 50 ms before the second attempt, up to 100 ms before the third.
  it.each([
    { random: 1, pauses: [50, 100] },
    { random: 0.5, pauses: [25, 50] },
    { random: 0, pauses: [0, 0] },
  ])("an idempotent tool failing twice then succeeding: attempts = 3, with backoff between (jitter $random → $pauses ms)", async ({ random, pauses }) => {
    const ep = new FakeEndpoint("fake#0").script(fail(internalError()), fail(internalError()), ok());
    const h = harness(backend({ retry: { initialBackoff: "50ms", maxBackoff: "1s" }, breaker: { volume: 100 } }), [ep], () => random);
    const reply = await within(150, h.call(5_000, { tool: idempotent }));
    expect(reply).toMatchObject({ ok: true, meta: { attempts: 3, endpoint: "fake#0" }, at: pauses[0]! + pauses[1]! });
    expect(ep.calls.map((c) => c.at)).toEqual([0, pauses[0], pauses[0]! + pauses[1]!]);
  });

  it("with the default jitter, the pauses stay within [0, initialBackoff] and [0, 2 × initialBackoff]", async () => {
    for (let i = 0; i < 20; i++) {
      const ep = new FakeEndpoint("fake#0").script(fail(internalError()), fail(internalError()), ok());
      const h = harness(backend({ retry: { initialBackoff: "50ms" }, breaker: { volume: 100 } }), [ep], Math.random);
      expect(await within(150, h.call(5_000, { tool: idempotent }))).toMatchObject({ ok: true, meta: { attempts: 3 } });
      const [a, b, c] = ep.calls.map((call) => call.at) as [number, number, number];
      expect(b - a).toBeGreaterThanOrEqual(0);
      expect(b - a).toBeLessThanOrEqual(50);
      expect(c - b).toBeGreaterThanOrEqual(0);
      expect(c - b).toBeLessThanOrEqual(100);
    }
  });

  it("a tool without annotations is tried once: its failure is the answer", async () => {
    const ep = new FakeEndpoint("fake#0").script(fail(internalError()), fail(internalError()), ok());
    const h = harness(backend({ breaker: { volume: 100 } }), [ep]);
    const reply = await within(0, h.call(5_000));
    expect(error(reply)).toMatchObject({ code: ErrorCode.BACKEND_ERROR, details: { endpoint: "fake#0", jsonRpcCode: McpErrorCode.InternalError } });
    expect(error(reply).details).not.toHaveProperty("attempts");
    expect(ep.calls).toHaveLength(1);
    // ... unless config says it is safe to repeat.
    const safe = harness(backend({ breaker: { volume: 100 }, tools: { echo: { idempotent: true } } }), [ep]);
    expect(await within(150, safe.call(5_000))).toMatchObject({ ok: true, meta: { attempts: 2 } });
  });

  it.each([
    { what: "EndpointDownError", err: () => new EndpointDownError("fake#0") },
    { what: "ECONNREFUSED", err: refused },
  ])("a failure that never reached the backend ($what) is retried even for a tool not safe to repeat", async ({ err }) => {
    const ep = new FakeEndpoint("fake#0").script(fail(err()), ok());
    const h = harness(backend({ breaker: { volume: 100 } }), [ep]);
    expect(await within(50, h.call(5_000))).toMatchObject({ ok: true, meta: { attempts: 2 }, at: 50 });
    expect(ep.calls).toHaveLength(2);
  });

  it("a connection that failed during the call (ECONNRESET) may have run it: not retried for an unsafe tool", async () => {
    const ep = new FakeEndpoint("fake#0").script(fail(reset()), ok());
    const h = harness(backend({ breaker: { volume: 100 } }), [ep]);
    expect(error(await within(0, h.call(5_000)))).toMatchObject({ code: ErrorCode.BACKEND_UNAVAILABLE });
    expect(ep.calls).toHaveLength(1);
  });

  it("the retry budget (ratio 0.25, reserve 2) stops retries once spent", async () => {
    // Every call fails; 3 retries allowed per request. Without the budget 8 requests would make 32 calls.
    const ep = new FakeEndpoint("fake#0", fail(internalError()));
    const h = harness(backend({ retry: { maxRetries: 3, budgetRatio: 0.25, budgetReserve: 2 }, breaker: { volume: 1_000 } }), [ep], () => 0);
    const attempts: number[] = [];
    for (let i = 0; i < 8; i++) {
      const before = ep.calls.length;
      const reply = await within(0, h.call(5_000, { tool: idempotent }));
      expect(code(reply)).toBe(ErrorCode.BACKEND_ERROR);
      expect(error(reply).details?.attempts ?? 1).toBe(ep.calls.length - before);
      attempts.push(ep.calls.length - before);
    }
    // Each request deposits 0.25 of a retry, each retry takes 1: the reserve of 2 (+0.25) buys two
    // retries for the first request, then every fourth request has saved up one.
    expect(attempts).toEqual([3, 1, 1, 2, 1, 1, 1, 2]);
    // requests + reserve + ratio × requests: 8 + 2 + 2.
    expect(ep.calls).toHaveLength(12);
  });
});

describe("CallPolicy: failover", () => {
  it("a call that never reached an endpoint moves to another without spending the retry budget", async () => {
    const a = new FakeEndpoint("fake#0");
    const b = new FakeEndpoint("fake#1");
    // A budget of exactly one retry, never refilled.
    const h = harness(backend({ retry: { budgetRatio: 0, budgetReserve: 1 }, breaker: { volume: 100 } }), [a, b], () => 0);

    // 1. Spend the budget: a backend fault on fake#0, retried on fake#1.
    a.script(fail(internalError()));
    expect(await within(0, h.call(5_000, { tool: idempotent }))).toMatchObject({ ok: true, meta: { attempts: 2, endpoint: "fake#1" } });
    // 2. It is spent: the same fault is the answer now (round-robin sends this request to fake#0).
    a.script(fail(internalError()));
    expect(error(await within(0, h.call(5_000, { tool: idempotent })))).toMatchObject({ code: ErrorCode.BACKEND_ERROR, details: { endpoint: "fake#0" } });
    expect([a.calls.length, b.calls.length]).toEqual([2, 1]);
    // 3. A call that never reached its endpoint still moves on, for an unsafe tool too (this request starts at fake#1).
    b.script(fail(new EndpointDownError("fake#1")));
    expect(await within(0, h.call(5_000))).toMatchObject({ ok: true, meta: { attempts: 2, endpoint: "fake#0" } });
    b.script(fail(refused()));
    expect(await within(0, h.call(5_000))).toMatchObject({ ok: true, meta: { attempts: 2, endpoint: "fake#0" } });
    expect([a.calls.length, b.calls.length]).toEqual([4, 3]);
  });

  it("with a single endpoint the same never-reached failure is a retry, and needs the budget", async () => {
    for (const [reserve, expected] of [
      [0, { code: ErrorCode.BACKEND_UNAVAILABLE, calls: 1 }],
      [1, { code: "ok", calls: 2 }],
    ] as const) {
      const ep = new FakeEndpoint("fake#0").script(fail(new EndpointDownError("fake#0")), ok());
      const h = harness(backend({ retry: { budgetRatio: 0, budgetReserve: reserve } }), [ep], () => 0);
      expect(code(await within(0, h.call(5_000)))).toBe(expected.code);
      expect(ep.calls).toHaveLength(expected.calls);
    }
  });
});

describe("CallPolicy: the rate-limit allowance max(p99, 50 ms, 5% of the budget)", () => {
  /** Take the bucket's only token, then send two calls whose budgets straddle the allowance. */
  async function straddle(h: Harness, ep: FakeEndpoint, refusedBudget: number, scheduledBudget: number, tokenMs: number) {
    const start = clock();
    expect(code(await h.call(5_000))).toBe("ok");
    const before = ep.calls.length;
    const refused = track(h.call(refusedBudget));
    const scheduled = track(h.call(scheduledBudget));
    await vi.advanceTimersByTimeAsync(0);
    expect(refused.at).toBe(start);
    expect(error(refused.reply!)).toMatchObject({ code: ErrorCode.RATE_LIMITED, retryAfterMs: tokenMs });
    await vi.advanceTimersByTimeAsync(tokenMs);
    expect(scheduled).toMatchObject({ at: start + tokenMs, reply: { ok: true } });
    expect(ep.calls.length - before).toBe(1);
    return ep.calls.at(-1)!;
  }

  it("without a p99: 50 ms must be left after the token (here 100 ms away)", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ rateLimit: { rate: 10, burst: 1 } }), [ep]);
    // 152: 152 - 3 - 50 = 99 ms of wait allowed, < 100. 153: exactly 100.
    const call = await straddle(h, ep, 152, 153, 100);
    expect(call.options.maxTotalMs).toBe(153 - 100 - REPLY_MARGIN_MS);
  });

  it("5% of a long budget (token 1 000 ms away)", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ rateLimit: { rate: 1, burst: 1 } }), [ep]);
    // 1055 - 3 - 52.75 = 999.25 < 1000 (with only the 50 ms floor it would pass); 1056 - 3 - 52.8 = 1000.2.
    const call = await straddle(h, ep, 1_055, 1_056, 1_000);
    expect(call.options.maxTotalMs).toBe(1_056 - 1_000 - REPLY_MARGIN_MS);
  });

  it("the tool's p99 once it is known and longer", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ rateLimit: { rate: 10, burst: 1 }, timeouts: { minSamples: 5 } }), [ep]);
    await warmUp(h, ep, 5, 200); // p99 = 200 ms; each call's token was back by the next
    // 302 - 3 - 200 = 99 < 100 (fine without a p99, as above); 303 leaves the call its 200 ms.
    const call = await straddle(h, ep, 302, 303, 100);
    expect(call.options).toMatchObject({ timeoutMs: 200, maxTotalMs: 200 });
  });
});

describe("CallPolicy: an impatient client is not a fault", () => {
  // Breaker: opens past 50% failures once 3 calls are in its window; p99 known after 5 samples.
  const config = () => backend({ timeouts: { minSamples: 5 }, breaker: { volume: 3 }, retry: { maxRetries: 0 } });

  it("timeouts of budgets shorter than the tool's p99 never count toward the breaker", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(config(), [ep]);
    await warmUp(h, ep, 5, 100); // p99 = 100 ms
    ep.otherwise = hang();
    for (let i = 0; i < 30; i++) {
      // 60 ms budget: cut at the 57 ms left, shorter than the tool usually takes.
      const reply = await within(57, h.call(60));
      expect(error(reply)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, details: { timeoutMs: 57, limitedBy: "budget" } });
    }
    expect(ep.calls).toHaveLength(35);
    expect(h.policy.breakers.get(ep)!.state).toBe("closed");
    expect(h.transitions).toEqual([]);
  });

  it.each([
    { what: "a budget longer than the p99 (cut at the deadline)", budget: 150, cut: 147, limitedBy: "budget" },
    { what: "a long budget (cut at the adaptive timeout, 4 × p99)", budget: 10_000, cut: 400, limitedBy: "adaptive" },
  ])("the same hung calls with $what open it", async ({ budget, cut, limitedBy }) => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(config(), [ep]);
    await warmUp(h, ep, 5, 100);
    ep.otherwise = hang();
    // 5 successes in the window: the 6th failure takes it over 50% (6 of 11).
    for (let i = 0; i < 6; i++) {
      expect(error(await within(cut, h.call(budget)))).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, details: { timeoutMs: cut, limitedBy } });
      expect(h.policy.breakers.get(ep)!.state).toBe(i < 5 ? "closed" : "open");
    }
    expect(h.transitions).toEqual(["fake#0 closed→open"]);
    expect(error(await h.call(budget)).code).toBe(ErrorCode.CIRCUIT_OPEN);
    expect(ep.calls).toHaveLength(11);
  });
});

describe("CallPolicy: cancels", () => {
  it("a client's cancel (or a stop) answers CANCELLED, is not retried, and never counts toward the breaker", async () => {
    const ep = new FakeEndpoint("fake#0", hang());
    // One counted failure would open this breaker.
    const h = harness(backend({ breaker: { volume: 1 } }), [ep]);
    for (let i = 0; i < 10; i++) {
      const controller = new AbortController();
      const call = track(h.call(5_000, { tool: idempotent, signal: controller.signal }));
      await vi.advanceTimersByTimeAsync(100);
      controller.abort(abortReason(i % 2 ? "stop" : "client", "cancelled by the client"));
      await vi.advanceTimersByTimeAsync(0);
      expect(call.at).toBe(clock());
      expect(error(call.reply!)).toMatchObject({ code: ErrorCode.CANCELLED, message: "cancelled by the client" });
      expect(error(call.reply!).details).toBeUndefined();
    }
    expect(ep.calls).toHaveLength(10);
    expect(h.policy.breakers.get(ep)!.state).toBe("closed");
    expect(h.transitions).toEqual([]);
  });

  it("a cancelled call is not counted even when the endpoint reports a fault of its own (the connection closed as the cancel went out)", async () => {
    const ep = new FakeEndpoint("fake#0", hang(new McpError(McpErrorCode.ConnectionClosed, "Connection closed")));
    const h = harness(backend({ breaker: { volume: 1 } }), [ep]);
    const controller = new AbortController();
    const call = track(h.call(5_000, { tool: idempotent, signal: controller.signal }));
    await vi.advanceTimersByTimeAsync(100);
    controller.abort(abortReason("client", "cancelled by the client"));
    await vi.advanceTimersByTimeAsync(0);
    expect(call.at).toBe(100);
    expect(error(call.reply!).code).toBe(ErrorCode.CANCELLED);
    expect(ep.calls).toHaveLength(1);
    expect(h.transitions).toEqual([]);
  });

  it("a signal aborted at the deadline answers DEADLINE_EXCEEDED; a backend that hung to the deadline counts", async () => {
    const ep = new FakeEndpoint("fake#0", hang());
    const h = harness(backend({ breaker: { volume: 1 } }), [ep]);
    const controller = new AbortController();
    const call = track(h.call(5_000, { tool: idempotent, signal: controller.signal }));
    await vi.advanceTimersByTimeAsync(300);
    controller.abort(abortReason("deadline", "the request's deadline passed"));
    await vi.advanceTimersByTimeAsync(0);
    expect(call.at).toBe(300);
    expect(error(call.reply!)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, details: { limitedBy: "budget" } });
    expect(ep.calls).toHaveLength(1);
    expect(h.transitions).toEqual(["fake#0 closed→open"]);
  });

  it("a signal aborted before the call answers at once without calling the endpoint", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend(), [ep]);
    for (const [kind, answer] of [
      ["client", ErrorCode.CANCELLED],
      ["stop", ErrorCode.CANCELLED],
      ["deadline", ErrorCode.DEADLINE_EXCEEDED],
    ] as const) {
      const controller = new AbortController();
      controller.abort(abortReason(kind, `aborted (${kind})`));
      expect(error(await h.call(5_000, { signal: controller.signal })).code).toBe(answer);
    }
    expect(ep.calls).toEqual([]);
  });

  it("a cancel during a backoff ends the wait at once, without another attempt", async () => {
    const ep = new FakeEndpoint("fake#0").script(fail(internalError()), ok());
    const h = harness(backend({ breaker: { volume: 100 } }), [ep]); // pauses 50 ms before the retry
    const controller = new AbortController();
    const call = track(h.call(5_000, { tool: idempotent, signal: controller.signal }));
    await vi.advanceTimersByTimeAsync(20);
    expect(call.reply).toBeUndefined();
    controller.abort(abortReason("client", "cancelled by the client"));
    await vi.advanceTimersByTimeAsync(0);
    expect(call.at).toBe(20);
    expect(error(call.reply!).code).toBe(ErrorCode.CANCELLED);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ep.calls).toHaveLength(1);
  });
});

describe("CallPolicy: adaptive timeout", () => {
  it("callTool gets timeoutMs = min(adaptive, remaining), capped by maxTotalMs = remaining; the timeout's source is in the answer", async () => {
    const ep = new FakeEndpoint("fake#0");
    const h = harness(backend({ timeouts: { call: "1s", min: "10ms", multiplier: 4, minSamples: 5 }, retry: { maxRetries: 0 }, breaker: { volume: 100 } }), [
      ep,
    ]);
    const optionsFor = async (budget: number): Promise<Pick<CallOptions, "timeoutMs" | "maxTotalMs">> => {
      ep.script(ok(20));
      expect(code(await within(20, h.call(budget)))).toBe("ok");
      const { timeoutMs, maxTotalMs } = ep.calls.at(-1)!.options;
      return { timeoutMs, maxTotalMs };
    };
    // Too few samples: the adaptive timeout is the call timeout (1 s).
    expect(await optionsFor(5_000)).toEqual({ timeoutMs: 1_000, maxTotalMs: 4_997 });
    expect(await optionsFor(500)).toEqual({ timeoutMs: 497, maxTotalMs: 497 });
    await warmUp(h, ep, 3, 20); // 5 samples of 20 ms: adaptive = 4 × p99 = 80 ms
    expect(await optionsFor(5_000)).toEqual({ timeoutMs: 80, maxTotalMs: 4_997 });
    expect(await optionsFor(50)).toEqual({ timeoutMs: 47, maxTotalMs: 47 });

    // A hung call is cut by whichever was shorter, and the answer says which.
    ep.otherwise = hang();
    const adaptive = await within(80, h.call(5_000));
    expect(adaptive.at - ep.calls.at(-1)!.at).toBe(80);
    expect(error(adaptive)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, details: { timeoutMs: 80, limitedBy: "adaptive" } });
    expect(error(adaptive).message).toMatch(/within 80 ms \(the adaptive timeout for this tool\)/);
    const budget = await within(47, h.call(50));
    expect(budget.at - ep.calls.at(-1)!.at).toBe(47);
    expect(error(budget)).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, details: { timeoutMs: 47, limitedBy: "budget" } });
    expect(error(budget).message).toMatch(/within 47 ms \(the request's deadline\)/);
  });
});
