import { describe, expect, it } from "vitest";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import { faultStdio, httpBackend, startEverythingHttp, startFaultHttp } from "../helpers/mcp.js";
import { startStack, waitFor } from "../helpers/toolbus.js";

async function cancelledAtBackend(client: ToolbusClient, backend: string): Promise<number> {
  const { result } = await client.callTool(backend, "stats", {}, { timeoutMs: 2_000, direct: true });
  return (result.structuredContent as { cancelled: number }).cancelled;
}

describe("a client that aborts a call tells the backend", () => {
  it.each([
    ["stdio", "router"],
    ["stdio", "direct"],
    ["http", "router"],
    ["http", "direct"],
  ] as const)("%s, %s path: a 10 s call aborted after 200 ms is cancelled at the backend within 500 ms", async (transport, path) => {
    await using http = await startFaultHttp();
    await using stack = await startStack({ backends: { fault: transport === "stdio" ? faultStdio(1) : httpBackend(http.url) } });
    const { client } = stack;
    const controller = new AbortController();
    const call = client.callTool("fault", "sleep", { ms: 10_000 }, { timeoutMs: 15_000, signal: controller.signal, direct: path === "direct" });
    await new Promise((r) => setTimeout(r, 200));
    controller.abort();
    await expect(call).rejects.toMatchObject({ code: "CANCELLED" });
    const abortedAt = performance.now();
    await waitFor("the backend to record the cancellation", async () => (await cancelledAtBackend(client, "fault")) === 1, 2_000);
    expect(performance.now() - abortedAt).toBeLessThan(500);
    // The caller holds nothing for it any more, and serves the next call.
    const { result } = await client.callTool("fault", "echo", { message: "next" }, { timeoutMs: 2_000 });
    expect(result.content).toEqual([{ type: "text", text: "Echo: next" }]);
  });
});

describe("a call cut short frees its HTTP connection", () => {
  // A server stops answering a cancelled request but keeps its event stream open; unless toolbus cuts
  // that stream, each cancel holds one of the pool's connections for good (here: the only one left
  // beside the server's event stream), and the next call waits forever.
  it.each(["fault server", "server-everything"] as const)("%s: three calls cancelled, then a call succeeds at once", async (which) => {
    await using http = which === "fault server" ? await startFaultHttp() : await startEverythingHttp();
    await using stack = await startStack({ backends: { web: { ...httpBackend(http.url), connections: 2, retry: { maxRetries: 0 } } } });
    const [tool, args] = which === "fault server" ? ["hang", {}] : ["trigger-long-running-operation", { duration: 10, steps: 5 }];
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController();
      const call = stack.client.callTool("web", tool, args, { timeoutMs: 5_000, signal: controller.signal });
      await new Promise((r) => setTimeout(r, 200));
      controller.abort();
      await expect(call).rejects.toMatchObject({ code: "CANCELLED" });
    }
    // And one cut by its deadline (the SDK cancels it the same way).
    await expect(stack.client.callTool("web", tool, args, { timeoutMs: 300 })).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED" });
    const { result } = await stack.client.callTool("web", "echo", { message: "free" }, { timeoutMs: 2_000 });
    expect(result.content).toEqual([{ type: "text", text: "Echo: free" }]);
  });
});

describe("the hard deadline", () => {
  it.each(["stdio", "http"] as const)(
    "%s: progress every 100 ms for 1 s, then silence: the call ends at its deadline, not an idle timeout later",
    async (transport) => {
      await using http = await startFaultHttp();
      const backend = transport === "stdio" ? faultStdio(1) : httpBackend(http.url);
      // The idle timeout (3 s) restarts on each progress; the last progress comes at ~1 s, so without a
      // hard deadline the call would end at ~4 s.
      await using stack = await startStack({ backends: { fault: { ...backend, timeouts: { call: "3s" }, retry: { maxRetries: 0 } } } });
      const started = performance.now();
      let error: unknown;
      try {
        await stack.client.callTool("fault", "sleep", { ms: 5_000, progressEveryMs: 100, progressForMs: 1_000 }, { timeoutMs: 1_500 });
      } catch (err) {
        error = err;
      }
      const ms = performance.now() - started;
      // The caller's answer (the client's own timer would say "no answer within the budget").
      expect(isToolbusError(error) && error.code).toBe("DEADLINE_EXCEEDED");
      expect((error as Error).message).toMatch(/backend did not answer .*the request's deadline.*cancelled at the backend/);
      expect(ms).toBeGreaterThan(1_400);
      expect(ms).toBeLessThan(2_000);
      // And the backend was told then, not an idle timeout later.
      await waitFor("the backend to record the cancellation", async () => (await cancelledAtBackend(stack.client, "fault")) === 1, 2_000);
      expect(performance.now() - started).toBeLessThan(2_500);
    },
  );
});
