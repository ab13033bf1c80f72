import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import type { ToolbusClient } from "@toolbus/client";
import { faultStdio, httpBackend, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { isAlive, startStack, waitFor, type Stack } from "../helpers/toolbus.js";

describe("backends that go away and come back", () => {
  let http: HttpServerProcess;
  let stack: Stack;
  let client: ToolbusClient;

  beforeAll(async () => {
    http = await startFaultHttp();
    stack = await startStack({ backends: { pool: faultStdio(2), web: httpBackend(http.url) } });
    client = stack.client;
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await http?.stop();
  });

  const caller = (backend: string) => stack.toolbus.workers.find((w) => w.name === `caller:${backend}`) as CallerWorker;

  it("a stdio pool member that dies is restarted, and calls go to the live member meanwhile", async () => {
    const pool = caller("pool");
    await waitFor("both pool members to be live", () => pool.endpoints.every((e) => e.live));
    const [victim, survivor] = pool.endpoints;
    const oldPid = victim!.pid!;
    process.kill(oldPid, "SIGKILL");
    await waitFor("the caller to notice the exit", () => !victim!.live, 5_000);

    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.callTool("pool", "echo", { message: `${i}` }, { timeoutMs: 3_000 })));
    expect(new Set(results.map((r) => r.meta.endpoint))).toEqual(new Set([survivor!.id]));

    await waitFor("the dead member to be restarted", () => victim!.live, 10_000);
    expect(victim!.pid).not.toBe(oldPid);
    expect(isAlive(oldPid)).toBe(false);
    const after = await Promise.all(Array.from({ length: 20 }, () => client.callTool("pool", "echo", { message: "x" }, { timeoutMs: 3_000 })));
    expect(new Set(after.map((r) => r.meta.endpoint)).size).toBe(2);
  });

  it("an HTTP server that restarts (forgetting our session) is re-initialized transparently on its 404", async () => {
    const before = await client.callTool("web", "echo", { message: "one" }, { timeoutMs: 3_000 });
    expect(before.result.content).toEqual([{ type: "text", text: "Echo: one" }]);
    const port = http.port;
    await http.stop();
    http = await startFaultHttp(port);
    // The very first calls after the restart succeed, 20 at once: the 404s are handled inside the
    // caller, which starts one new session for all of them.
    const after = await Promise.all(Array.from({ length: 20 }, (_, i) => client.callTool("web", "echo", { message: `two-${i}` }, { timeoutMs: 5_000 })));
    expect(after.map((a) => a.result.content)).toEqual(Array.from({ length: 20 }, (_, i) => [{ type: "text", text: `Echo: two-${i}` }]));
  });

  it("a backend that is down answers at once with a retryable typed error", async () => {
    await http.stop();
    const started = performance.now();
    // Connection refused (BACKEND_UNAVAILABLE) until the breaker opens (CIRCUIT_OPEN).
    for (let i = 0; i < 3; i++) {
      const error = await client.callTool("web", "echo", { message: "x" }, { timeoutMs: 5_000 }).catch((err: unknown) => err);
      expect(["BACKEND_UNAVAILABLE", "CIRCUIT_OPEN"]).toContain((error as { code: string }).code);
      expect((error as { retryable: boolean }).retryable).toBe(true);
    }
    expect(performance.now() - started).toBeLessThan(2_000);
  });
});

describe("tool lists", () => {
  it("are refreshed on notifications/tools/list_changed, and the router learns the new tool", async () => {
    await using stack = await startStack({ backends: { fault: faultStdio(1) } });
    const client = stack.client;
    await expect(client.callTool("fault", "late-tool", { text: "x" }, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "UNKNOWN_TOOL" });
    await client.callTool("fault", "add-tool", { name: "late-tool" }, { timeoutMs: 2_000 });
    await waitFor("the router to list the new tool", async () => {
      const [fault] = await client.listTools("fault");
      return fault?.tools?.some((t) => t.name === "late-tool") === true;
    });
    const { result } = await client.callTool("fault", "late-tool", { text: "hello" }, { timeoutMs: 2_000 });
    expect(result.content).toEqual([{ type: "text", text: "late-tool: hello" }]);
    // Its schema is enforced too.
    await expect(client.callTool("fault", "late-tool", { text: 1 }, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
  });
});
