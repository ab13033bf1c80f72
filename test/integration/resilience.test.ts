import { describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import { subjects, type BreakerEvent } from "@toolbus/protocol";
import { faultStdio, httpBackend, startFaultHttp } from "../helpers/mcp.js";
import { startStack, toolbusCommand, waitFor, type Stack } from "../helpers/toolbus.js";

interface Stats {
  received: number;
  inFlight: number;
  maxInFlight: number;
  byTool: Record<string, number>;
}

async function stats(client: ToolbusClient, backend: string): Promise<Stats> {
  const { result } = await client.callTool(backend, "stats", {}, { timeoutMs: 2_000, direct: true });
  return result.structuredContent as unknown as Stats;
}

/** Settle a call into its outcome: "ok" or the error code, and how long it took. */
async function outcome(call: Promise<unknown>): Promise<{ code: string; ms: number; retryAfterMs?: number; attempts?: number; error?: unknown }> {
  const started = performance.now();
  try {
    const value = (await call) as { meta: { attempts: number } };
    return { code: "ok", ms: performance.now() - started, attempts: value.meta.attempts };
  } catch (err) {
    if (!isToolbusError(err)) throw err;
    return {
      code: err.code,
      ms: performance.now() - started,
      retryAfterMs: err.retryAfterMs,
      attempts: err.details?.attempts as number | undefined,
      error: err,
    };
  }
}

const caller = (stack: Stack, backend: string) => stack.toolbus.workers.find((w) => w.name === `caller:${backend}`) as CallerWorker;

describe("breaker", () => {
  it("opens after the threshold; the next 100 calls fail fast with CIRCUIT_OPEN and none reaches the backend; a probe after recovery closes it", async () => {
    await using stack = await startStack({
      backends: { fault: { ...faultStdio(1), breaker: { volume: 3, recovery: "1s" }, retry: { maxRetries: 0 } } },
    });
    const { client } = stack;
    const events: BreakerEvent[] = [];
    const sub = client.nc.subscribe(subjects.breakerEvents("fault"), { callback: (_e, m) => events.push(m.json<BreakerEvent>()) });
    await client.nc.flush();

    // The backend fails every call (a JSON-RPC internal error: a fault of the backend).
    for (let i = 0; i < 3; i++) expect((await outcome(client.callTool("fault", "rpc-error", {}, { timeoutMs: 2_000 }))).code).toBe("BACKEND_ERROR");
    const before = await stats(client, "fault").catch(() => undefined);
    expect(before).toBeUndefined(); // even the stats tool is refused: the breaker is per endpoint

    const rejected = await Promise.all(Array.from({ length: 100 }, () => outcome(client.callTool("fault", "echo", { message: "x" }, { timeoutMs: 2_000 }))));
    expect(new Set(rejected.map((r) => r.code))).toEqual(new Set(["CIRCUIT_OPEN"]));
    for (const r of rejected) expect(r.retryAfterMs).toBeGreaterThan(0);
    expect(Math.max(...rejected.map((r) => r.ms))).toBeLessThan(500);
    // `toolbus status` shows it.
    const status = await toolbusCommand(["--nats", stack.nats.url, "status", "--json"]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual([
      // Open, or already half-open if starting `toolbus status` took a busy machine longer than the recovery time.
      expect.objectContaining({
        backend: "fault",
        endpoints: [expect.objectContaining({ id: "fault#0", live: true, breaker: expect.stringMatching(/^(open|half-open)$/) })],
      }),
    ]);

    // After the recovery time one probe goes through; the backend is fine, so the breaker closes.
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await outcome(client.callTool("fault", "echo", { message: "probe" }, { timeoutMs: 2_000 }))).code).toBe("ok");
    const after = await stats(client, "fault");
    // What reached the backend: the 3 failures and the probe; none of the 100 rejected calls.
    expect(after.byTool).toEqual({ "rpc-error": 3, echo: 1 });
    await waitFor("three breaker events", () => events.length === 3);
    expect(events.map((e) => `${e.from}→${e.to}`)).toEqual(["closed→open", "open→half-open", "half-open→closed"]);
    expect(events[0]).toMatchObject({ backend: "fault", endpoint: "fault#0", reason: expect.stringMatching(/failure rate/) });
    sub.unsubscribe();
  });

  it("over HTTP, 5xx answers open it; after recovery one probe closes it", async () => {
    await using http = await startFaultHttp();
    await using stack = await startStack({
      backends: { web: { ...httpBackend(http.url), breaker: { volume: 3, recovery: "500ms" }, retry: { maxRetries: 0 } } },
    });
    const { client } = stack;
    for (let i = 0; i < 3; i++)
      expect((await outcome(client.callTool("web", "http-error", { status: 503, text: "busy" }, { timeoutMs: 2_000 }))).code).toBe("BACKEND_UNAVAILABLE");
    const rejected = await Promise.all(Array.from({ length: 100 }, () => outcome(client.callTool("web", "echo", { message: "x" }, { timeoutMs: 2_000 }))));
    expect(new Set(rejected.map((r) => r.code))).toEqual(new Set(["CIRCUIT_OPEN"]));
    await new Promise((r) => setTimeout(r, 600));
    expect((await outcome(client.callTool("web", "echo", { message: "back" }, { timeoutMs: 5_000 }))).code).toBe("ok");
    expect(caller(stack, "web").breakerStates()).toEqual({ "web#0": "closed" });
  });

  it("a half-open probe that ends in the caller's mistake does not close it", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), breaker: { volume: 3, recovery: "300ms" }, retry: { maxRetries: 0 } } } });
    const { client } = stack;
    for (let i = 0; i < 3; i++) await outcome(client.callTool("fault", "rpc-error", {}, { timeoutMs: 2_000 }));
    expect(caller(stack, "fault").breakerStates()).toEqual({ "fault#0": "open" });
    await new Promise((r) => setTimeout(r, 400));
    // The probe: the backend refuses the arguments (JSON-RPC invalid params). That shows nothing about its health.
    expect((await outcome(client.callTool("fault", "rpc-error", { code: -32602 }, { timeoutMs: 2_000 }))).code).toBe("BACKEND_ERROR");
    expect(caller(stack, "fault").breakerStates()).toEqual({ "fault#0": "open" });
    await new Promise((r) => setTimeout(r, 400));
    expect((await outcome(client.callTool("fault", "echo", { message: "fine" }, { timeoutMs: 2_000 }))).code).toBe("ok");
    expect(caller(stack, "fault").breakerStates()).toEqual({ "fault#0": "closed" });
  });

  it("tool errors (isError) and invalid arguments never open it", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), breaker: { volume: 3 } } } });
    const { client } = stack;
    for (let i = 0; i < 10; i++) {
      const { result } = await client.callTool("fault", "fail", {}, { timeoutMs: 2_000 });
      expect(result.isError).toBe(true);
      // Refused by the caller's schema check: never reaches the policies.
      expect((await outcome(client.callTool("fault", "sleep", { ms: "soon" }, { timeoutMs: 2_000 }))).code).toBe("VALIDATION_FAILED");
      // Refused by the backend itself as invalid params: the caller's mistake, not the backend's fault.
      expect((await outcome(client.callTool("fault", "rpc-error", { code: -32602 }, { timeoutMs: 2_000 }))).code).toBe("BACKEND_ERROR");
    }
    expect(caller(stack, "fault").breakerStates()).toEqual({ "fault#0": "closed" });
    expect((await outcome(client.callTool("fault", "echo", { message: "fine" }, { timeoutMs: 2_000 }))).code).toBe("ok");
  });

  it("a hung tool ends with DEADLINE_EXCEEDED at its deadline, and the breaker counts it", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), breaker: { volume: 1 } } } });
    const { client } = stack;
    const hung = await outcome(client.callTool("fault", "hang", {}, { timeoutMs: 800 }));
    expect(hung.code).toBe("DEADLINE_EXCEEDED");
    expect(hung.ms).toBeGreaterThan(700);
    // Answered at its 800 ms deadline, with room for a loaded machine (the exact cut is in policy.test.ts).
    expect(hung.ms).toBeLessThan(1_300);
    expect(caller(stack, "fault").breakerStates()).toEqual({ "fault#0": "open" });
  });
});

describe("retries", () => {
  it("a tool that fails twice then succeeds: attempts = 3 when idempotent; tried exactly once without the annotations", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), breaker: { volume: 100 } } } });
    const { client } = stack;
    const safe = await outcome(client.callTool("fault", "flaky", { id: "a", failures: 2 }, { timeoutMs: 5_000 }));
    expect(safe).toMatchObject({ code: "ok", attempts: 3 });
    const unsafe = await outcome(client.callTool("fault", "flaky-unsafe", { id: "b", failures: 2 }, { timeoutMs: 5_000 }));
    expect(unsafe.code).toBe("BACKEND_ERROR");
    expect(unsafe.attempts).toBeUndefined(); // one attempt
    expect((await stats(client, "fault")).byTool).toEqual({ flaky: 3, "flaky-unsafe": 1 });
  });

  it("config can declare a tool safe to repeat", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), tools: { "flaky-unsafe": { idempotent: true } } } } });
    expect(await outcome(stack.client.callTool("fault", "flaky-unsafe", { id: "c", failures: 1 }, { timeoutMs: 5_000 }))).toMatchObject({
      code: "ok",
      attempts: 2,
    });
  });

  it("with every call failing, the retry budget keeps what reaches the backend under requests × (1 + ratio) + a small constant", async () => {
    const requests = 100;
    await using stack = await startStack({
      backends: {
        fault: {
          ...faultStdio(1),
          breaker: { volume: 100_000 },
          retry: { maxRetries: 3, initialBackoff: 1, maxBackoff: 2, budgetRatio: 0.2, budgetReserve: 5 },
        },
      },
    });
    const { client } = stack;
    for (let i = 0; i < requests; i++) expect((await outcome(client.callTool("fault", "rpc-error", {}, { timeoutMs: 5_000 }))).code).toBe("BACKEND_ERROR");
    const reached = (await stats(client, "fault")).byTool["rpc-error"]!;
    // Without a budget it would be 400 (1 + 3 retries each).
    expect(reached).toBeLessThanOrEqual(requests * 1.2 + 5 + 1);
    expect(reached).toBeGreaterThan(requests);
  });
});

describe("rate limit", () => {
  it("12/s with burst 1: of 100 calls at once with 2 s budgets about 24 complete at ≈12/s; the rest are refused at once with RATE_LIMITED", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), rateLimit: { rate: 12, burst: 1 } } } });
    const { client } = stack;
    const t0 = performance.now();
    const completedAt: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 100 }, async () => {
        const r = await outcome(client.callTool("fault", "echo", { message: "x" }, { timeoutMs: 2_000 }));
        if (r.code === "ok") completedAt.push(performance.now() - t0);
        return r;
      }),
    );
    const ok = results.filter((r) => r.code === "ok");
    const limited = results.filter((r) => r.code === "RATE_LIMITED");
    expect(ok.length + limited.length, `outcomes: ${JSON.stringify(results.filter((r) => r.code !== "ok" && r.code !== "RATE_LIMITED"))}`).toBe(100);
    expect(ok.length).toBeGreaterThanOrEqual(20);
    expect(ok.length).toBeLessThanOrEqual(1 + 2 * 12);
    // Refused as soon as it is clear they cannot make it, with when to try again.
    for (const r of limited) {
      expect(r.ms).toBeLessThan(500);
      expect(r.retryAfterMs).toBeGreaterThan(1_500);
    }
    for (const r of results) expect(r.ms).toBeLessThan(2_000 + 100);
    // Spread at ≈12/s: the n-th completes no earlier than (n-1)/12 s. ±40 ms is what a loaded 2-core
    // machine keeps; unlimited they would all land within a few ms (the exact spacing is in policy.test.ts).
    completedAt.sort((a, b) => a - b);
    const span = completedAt.at(-1)! - completedAt[0]!;
    expect(span / (ok.length - 1)).toBeGreaterThan(1000 / 12 - 40);
    expect(span / (ok.length - 1)).toBeLessThan(1000 / 12 + 40);
  });
});

describe("bulkhead", () => {
  it("4 in flight per endpoint: the backend never sees more than 4; beyond the queue, OVERLOADED", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), bulkhead: { maxConcurrent: 4, maxQueue: 4 } } } });
    const { client } = stack;
    // Each call holds its slot for 1 s, so all 20 arrive while the first 4 run and 4 wait.
    const results = await Promise.all(Array.from({ length: 20 }, () => outcome(client.callTool("fault", "sleep", { ms: 1_000 }, { timeoutMs: 5_000 }))));
    const counts = results.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.code]: (acc[r.code] ?? 0) + 1 }), {});
    expect(counts).toEqual({ ok: 8, OVERLOADED: 12 });
    // At once, not after waiting for a slot (≥ 1 s here).
    for (const r of results.filter((x) => x.code === "OVERLOADED")) expect(r.ms).toBeLessThan(500);
    expect((await stats(client, "fault")).maxInFlight).toBe(4);
  });
});

describe("timeouts", () => {
  it("progress: a 3 s tool reporting every 200 ms succeeds with a 1 s idle timeout and a 5 s budget; without progress it is cut at ~1 s", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), timeouts: { call: "1s" }, retry: { maxRetries: 0 } } } });
    const { client } = stack;
    const [withProgress, without] = await Promise.all([
      outcome(client.callTool("fault", "sleep", { ms: 3_000, progressEveryMs: 200 }, { timeoutMs: 5_000 })),
      outcome(client.callTool("fault", "sleep", { ms: 3_000 }, { timeoutMs: 5_000 })),
    ]);
    expect(withProgress.code).toBe("ok");
    expect(withProgress.ms).toBeGreaterThan(2_900);
    expect(without.code).toBe("DEADLINE_EXCEEDED");
    expect(without.ms).toBeGreaterThan(950);
    expect(without.ms).toBeLessThan(1_400);
  });

  it("progress never carries a call past its budget", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), timeouts: { call: "1s" } } } });
    const r = await outcome(stack.client.callTool("fault", "sleep", { ms: 5_000, progressEveryMs: 200 }, { timeoutMs: 2_000 }));
    expect(r.code).toBe("DEADLINE_EXCEEDED");
    expect(r.ms).toBeGreaterThan(1_900);
    expect(r.ms).toBeLessThan(2_100);
  });

  it("adaptive: after 200 fast calls, a call 20× slower than their p99 is cut at the adaptive timeout, well before the budget", async () => {
    await using stack = await startStack({
      backends: { fault: { ...faultStdio(1), timeouts: { min: "20ms", multiplier: 4, minSamples: 50 }, retry: { maxRetries: 0 }, breaker: { volume: 1_000 } } },
    });
    const { client } = stack;
    for (let i = 0; i < 200; i++) await client.callTool("fault", "sleep", { ms: 10 }, { timeoutMs: 2_000 });
    // p99 ≈ 10-20 ms here; 20× that is 200-400 ms, the adaptive timeout 4× p99 (at least 20 ms).
    const slow = await outcome(client.callTool("fault", "sleep", { ms: 400 }, { timeoutMs: 10_000 }));
    expect(slow.code).toBe("DEADLINE_EXCEEDED");
    expect((slow.error as Error).message).toMatch(/adaptive timeout/);
    // Far below the 10 s budget, with room for a loaded machine (the exact cut is in policy.test.ts).
    expect(slow.ms).toBeLessThan(1_000);
  });
});

describe("adaptive timeout after a lasting slowdown", () => {
  it("calls cut by the adaptive timeout count as samples, so the timeout rises and the slower backend is served again", async () => {
    await using stack = await startStack({
      backends: {
        fault: { ...faultStdio(1), timeouts: { min: "20ms", multiplier: 4, minSamples: 50 }, retry: { maxRetries: 0 }, breaker: { volume: 100_000 } },
      },
    });
    const { client } = stack;
    for (let i = 0; i < 100; i++) await client.callTool("fault", "sleep", { ms: 5 }, { timeoutMs: 2_000 });
    // The backend is now 400 ms slow for good (far beyond 4 × the p99 of 5 ms calls, even on a loaded
    // machine): first cut at the old p99, then, as the cut calls raise it, served.
    const outcomes: string[] = [];
    // (The p99 is recomputed every 16 samples, so each ×4 step of the timeout takes at most 16 cuts: two
    // steps take it from any start below 100 ms past 400 ms.)
    for (let i = 0; i < 40; i++) outcomes.push((await outcome(client.callTool("fault", "sleep", { ms: 400 }, { timeoutMs: 3_000 }))).code);
    expect(outcomes[0]).toBe("DEADLINE_EXCEEDED");
    expect(outcomes.slice(-4)).toEqual(Array(4).fill("ok"));
  });
});

describe("failover and restarts", () => {
  it("two HTTP endpoints, one stopped: every idempotent call succeeds via the other, and the dead endpoint is marked down", async () => {
    const [a, b] = await Promise.all([startFaultHttp(), startFaultHttp()]);
    try {
      await using stack = await startStack({ backends: { web: { kind: "mcp-http", urls: [a.url, b.url], breaker: { volume: 3 } } } });
      const { client } = stack;
      await waitFor("both endpoints live", () => caller(stack, "web").endpoints.every((e) => e.live));
      await a.stop();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => outcome(client.callTool("web", "echo", { message: `${i}` }, { timeoutMs: 5_000 }))),
      );
      expect(results.map((r) => r.code)).toEqual(Array(50).fill("ok"));
      // The dead one is marked down (the reconnect loop looks for it, not the calls); the live one's breaker is closed.
      expect(caller(stack, "web").endpoints.map((e) => e.live)).toEqual([false, true]);
      expect(caller(stack, "web").breakerStates()["web#1"]).toBe("closed");
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("a stdio child that exits mid-call: a typed error for that call, the child restarts, later calls succeed", async () => {
    await using stack = await startStack({ backends: { fault: faultStdio(1) } });
    const { client } = stack;
    const endpoint = caller(stack, "fault").endpoints[0]!;
    const pid = endpoint.pid;
    const crashed = await outcome(client.callTool("fault", "exit", { afterMs: 50 }, { timeoutMs: 5_000 }));
    // Not safe to repeat (no annotations): answered at once with a typed error, not retried.
    expect(crashed.code).toBe("BACKEND_UNAVAILABLE");
    await waitFor("the child to restart", () => endpoint.live && endpoint.pid !== pid, 10_000);
    expect((await outcome(client.callTool("fault", "echo", { message: "again" }, { timeoutMs: 5_000 }))).code).toBe("ok");
  });

  it("garbage on a stdio child's stdout is skipped; the call still gets its answer", async () => {
    await using stack = await startStack({ backends: { fault: faultStdio(1) } });
    const { result } = await stack.client.callTool("fault", "garbage", {}, { timeoutMs: 2_000 });
    expect(result.content).toEqual([{ type: "text", text: "after garbage" }]);
  });
});
