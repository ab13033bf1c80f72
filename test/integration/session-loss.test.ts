import { describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import { isToolbusError } from "@toolbus/client";
import { httpBackend, startEverythingHttp, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startStack, waitFor, type Stack } from "../helpers/toolbus.js";

/**
 * A server that restarts forgets its MCP sessions. The spec says it then answers the old session id
 * with 404; the reference server-everything answers 400 "No valid session ID provided". toolbus must
 * recover from both, by itself, without a restart of its own.
 */

const caller = (stack: Stack, backend: string) => stack.toolbus.workers.find((w) => w.name === `caller:${backend}`) as CallerWorker;

interface Outcome {
  at: number;
  ms: number;
  code: string;
}

/** Call `echo` from `lanes` loops until `until()` says stop; record every outcome with its time. */
async function flow(stack: Stack, backend: string, lanes: number, until: () => boolean): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      for (let i = 0; !until(); i++) {
        const started = performance.now();
        let code = "ok";
        try {
          await stack.client.callTool(backend, "echo", { message: `${lane}-${i}` }, { timeoutMs: 3_000 });
        } catch (err) {
          if (!isToolbusError(err)) throw err;
          code = err.code;
        }
        outcomes.push({ at: started, ms: performance.now() - started, code });
        // Keep a steady trickle, not a busy loop of fast failures.
        await new Promise((r) => setTimeout(r, 20));
      }
    }),
  );
  return outcomes;
}

describe("server-everything over streamable HTTP, killed and started again on the same port", () => {
  it("while calls flow: typed errors, fast, while it is down; every call succeeds within a few seconds of its return", async () => {
    let server: HttpServerProcess = await startEverythingHttp();
    await using stack = await startStack({ backends: { everything: httpBackend(server.url) } });
    try {
      let stop = false;
      const flowing = flow(stack, "everything", 4, () => stop);
      await new Promise((r) => setTimeout(r, 500));
      const port = server.port;
      const killedAt = performance.now();
      await server.stop();
      await new Promise((r) => setTimeout(r, 1_500));
      server = await startEverythingHttp(port);
      const backAt = performance.now();
      await new Promise((r) => setTimeout(r, 6_000));
      stop = true;
      const outcomes = await flowing;

      // Calls that were over before the kill (one that spans it may fail, and should).
      const before = outcomes.filter((o) => o.at + o.ms < killedAt);
      expect(before.length).toBeGreaterThan(10);
      expect(before.every((o) => o.code === "ok")).toBe(true);
      // Down: every failure is typed and retryable-kind, and answered fast (the budget is 3 s).
      const failures = outcomes.filter((o) => o.code !== "ok");
      expect(failures.length).toBeGreaterThan(0);
      for (const f of failures) {
        expect(["BACKEND_UNAVAILABLE", "CIRCUIT_OPEN"]).toContain(f.code);
        expect(f.ms).toBeLessThan(1_500);
      }
      // Back: within a few seconds of its return, every call succeeds.
      const settled = outcomes.filter((o) => o.at > backAt + 4_000);
      expect(settled.length).toBeGreaterThan(10);
      expect(settled.map((o) => o.code)).toEqual(settled.map(() => "ok"));
      expect(caller(stack, "everything").endpoints[0]!.live).toBe(true);
    } finally {
      await server.stop();
    }
  });

  it("a quick restart: the first call after it succeeds, and so does tools/list as the first request", async () => {
    let server: HttpServerProcess = await startEverythingHttp();
    await using stack = await startStack({ backends: { everything: httpBackend(server.url) } });
    const endpoint = caller(stack, "everything").endpoints[0]!;
    try {
      for (const first of ["call", "tools/list"] as const) {
        await stack.client.callTool("everything", "echo", { message: "before" }, { timeoutMs: 3_000 });
        const port = server.port;
        await server.stop();
        server = await startEverythingHttp(port);
        if (first === "call") {
          const { result } = await stack.client.callTool("everything", "echo", { message: "after" }, { timeoutMs: 5_000 });
          expect(result.content).toEqual([{ type: "text", text: "Echo: after" }]);
        } else {
          await waitFor("the endpoint to be live", () => endpoint.live, 10_000);
          const tools = await endpoint.listTools(5_000);
          expect(tools.map((t) => t.name)).toContain("echo");
        }
      }
    } finally {
      await server.stop();
    }
  });
});

describe("the fault server's answers to a forgotten session", () => {
  it.each([404, 400] as const)("HTTP %i: 20 calls at once right after a restart all succeed on one new session", async (status) => {
    let server = await startFaultHttp(undefined, { unknownSession: status });
    await using stack = await startStack({ backends: { web: httpBackend(server.url) } });
    try {
      await stack.client.callTool("web", "echo", { message: "one" }, { timeoutMs: 3_000 });
      const port = server.port;
      await server.stop();
      server = await startFaultHttp(port, { unknownSession: status });
      const after = await Promise.all(
        Array.from({ length: 20 }, (_, i) => stack.client.callTool("web", "echo", { message: `two-${i}` }, { timeoutMs: 5_000 })),
      );
      expect(after.map((a) => a.result.content)).toEqual(Array.from({ length: 20 }, (_, i) => [{ type: "text", text: `Echo: two-${i}` }]));
    } finally {
      await server.stop();
    }
  });

  it("a 400 naming the session that persists on a fresh session is a backend fault: BACKEND_UNAVAILABLE, and the breaker counts it", async () => {
    await using server = await startFaultHttp(undefined, { unknownSession: 400 });
    await using stack = await startStack({ backends: { web: { ...httpBackend(server.url), breaker: { volume: 2 }, retry: { maxRetries: 0 } } } });
    const lying = { status: 400, text: '{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}' };
    for (let i = 0; i < 2; i++) {
      const error = await stack.client.callTool("web", "http-error", lying, { timeoutMs: 3_000 }).catch((err: unknown) => err);
      expect(error).toMatchObject({ code: "BACKEND_UNAVAILABLE", message: expect.stringMatching(/refused a fresh MCP session/) });
    }
    expect(caller(stack, "web").breakerStates()).toEqual({ "web#0": "open" });
  });
});
