import { getEventListeners } from "node:events";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import { faultStdio, httpBackend, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

// A full collection on demand, without restarting node with --expose-gc.
setFlagsFromString("--expose_gc");
const gc = runInNewContext("gc") as () => void;

/**
 * Nothing may accumulate per call: a listener, a map entry, a timer. Such a leak shows as heap that
 * grows with the number of calls (the SDK's long-lived signal once gained ~70 bytes per HTTP call),
 * and as calls that get slower the more have been made (a listener pile-up once made call 60,000
 * thirty times slower than call 1,000).
 */
describe("a long stream of calls", () => {
  let http: HttpServerProcess;
  let stack: Stack;
  beforeAll(async () => {
    http = await startFaultHttp();
    stack = await startStack({ backends: { stdio: faultStdio(1), web: httpBackend(http.url) } });
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await http?.stop();
  });

  async function rate(backend: string, calls: number): Promise<number> {
    let issued = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (issued++ < calls) await stack.client.callTool(backend, "echo", { message: "soak" }, { timeoutMs: 10_000, direct: true });
      }),
    );
    return calls / ((performance.now() - started) / 1000);
  }

  const heapAfterGc = async (): Promise<number> => {
    // Twice, with a turn of the event loop between: finalizers and weak references settle in between.
    gc();
    await new Promise((r) => setTimeout(r, 100));
    gc();
    return process.memoryUsage().heapUsed;
  };

  /** The signals that depend on `signal` (AbortSignal.any registers them there; Node 20 never prunes them). */
  const dependants = (signal: AbortSignal): number => {
    const key = Object.getOwnPropertySymbols(signal).find((s) => s.description === "kDependantSignals");
    return key ? ((signal as unknown as Record<symbol, Set<unknown> | undefined>)[key]?.size ?? 0) : 0;
  };

  it("stdio: the last 3,000 of 40,000 calls run at least a third as fast as the first 3,000", async () => {
    await rate("stdio", 3_000); // warm-up
    const first = await rate("stdio", 3_000);
    await rate("stdio", 40_000 - 3 * 3_000);
    const last = await rate("stdio", 3_000);
    expect(last, `first ${Math.round(first)}/s, last ${Math.round(last)}/s`).toBeGreaterThan(first / 3);
  });

  it("HTTP: after 50,000 calls, heap after gc() is within 2 MB of the heap after the first 5,000, and per-call state is back to nothing", async () => {
    const endpoint = (stack.toolbus.workers.find((w) => w.name === "caller:web") as CallerWorker).endpoints[0]!;
    await rate("web", 5_000);
    const base = await heapAfterGc();
    const first = await rate("web", 5_000);
    await rate("web", 35_000);
    const last = await rate("web", 5_000);
    const grown = (await heapAfterGc()) - base;
    // What the SDK keeps per request, and what hangs on its long-lived signal (the leak's home).
    const client = (endpoint as unknown as { client: unknown }).client as {
      _responseHandlers: Map<unknown, unknown>;
      _progressHandlers: Map<unknown, unknown>;
      _timeoutInfo: Map<unknown, unknown>;
      transport: { _abortController?: AbortController; pending?: { requests: number; streams: number } };
    };
    expect(client._responseHandlers.size).toBe(0);
    expect(client._progressHandlers.size).toBe(0);
    expect(client._timeoutInfo.size).toBe(0);
    if (client.transport.pending) {
      // The lean transport: no request or answer stream left over (a controller each, per call).
      expect(client.transport.pending).toEqual({ requests: 0, streams: 0 });
    } else {
      const signal = client.transport._abortController!.signal;
      expect(getEventListeners(signal, "abort").length).toBeLessThanOrEqual(2);
      expect(dependants(signal)).toBeLessThanOrEqual(2);
    }
    expect(grown, `heap grew ${(grown / 1024).toFixed(0)} KiB over 45,000 calls`).toBeLessThan(2 * 1024 * 1024);
    expect(last, `first ${Math.round(first)}/s, last ${Math.round(last)}/s`).toBeGreaterThan(first / 3);
    // 50,000 calls through the SDK's transport (the sdk-http-transport project) take 45-60 s on 2 busy
    // cores: the time is the work's, not what the test is about.
  }, 180_000);
});
