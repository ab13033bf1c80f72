import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { faultStdio, httpBackend, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

/**
 * Nothing may accumulate per call: a listener, a map entry, a timer. Such a leak shows as calls that
 * get slower the more have been made (it once made call 60,000 thirty times slower than call 1,000).
 * Compare the rate of the last slice of a long stream with that of the first, in one run.
 */
describe("a long stream of calls does not slow down", () => {
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

  it.each([
    ["stdio", 3_000, 40_000],
    ["web", 500, 6_000],
  ])("%s: the last %i calls of %i run at least a third as fast as the first", async (backend, slice, total) => {
    await rate(backend, slice); // warm-up
    const first = await rate(backend, slice);
    await rate(backend, total - 3 * slice);
    const last = await rate(backend, slice);
    expect(last, `first ${Math.round(first)}/s, last ${Math.round(last)}/s`).toBeGreaterThan(first / 3);
  });
});
