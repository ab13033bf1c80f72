import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient } from "@toolbus/client";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { faultStdio, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { FAULT_SERVER } from "../helpers/paths.js";
import { childPids, isAlive, removeTempDirs, runToolbus, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";

describe("graceful stop of `toolbus up`", () => {
  let nats: TestNats;
  let client: ToolbusClient;
  let unrelated: HttpServerProcess;

  beforeAll(async () => {
    nats = await startNats();
    client = await ToolbusClient.connect({ servers: nats.url });
    unrelated = await startFaultHttp();
  });
  afterAll(async () => {
    await client?.close();
    await unrelated?.stop();
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  const config = () =>
    writeConfig({
      admin: { port: 0 },
      heartbeat: 200,
      backends: {
        fault: faultStdio(2),
        // An HTTP backend toolbus launches itself: it must be stopped too.
        launched: { kind: "mcp-http", url: "http://127.0.0.1:1/mcp", launch: { command: process.execPath, args: [FAULT_SERVER, "--http", "--port", "0"] } },
      },
    });

  for (const how of ["SIGTERM to the process", "Ctrl-C (SIGINT to the whole process group)"] as const) {
    it(`${how} with calls in flight: they complete, exit code 0, no child process left behind`, async () => {
      const ctrlC = how.startsWith("Ctrl-C");
      const up = runToolbus(["--config", config(), "--nats", nats.url, "up"], { detached: ctrlC });
      await waitForBackends(client, ["fault"]);
      const children = await childPids(up.child.pid!);
      // Two stdio pool members and the launched HTTP server.
      expect(children.length).toBe(3);

      const calls = Array.from({ length: 10 }, (_, i) => client.callTool("fault", "sleep", { ms: 1_500 }, { timeoutMs: 10_000, requestId: `inflight-${i}` }));
      await new Promise((r) => setTimeout(r, 300));
      if (ctrlC) process.kill(-up.child.pid!, "SIGINT");
      else up.kill("SIGTERM");

      const results = await Promise.allSettled(calls);
      expect(results.map((r) => r.status)).toEqual(Array(10).fill("fulfilled"));
      expect(await up.exited).toBe(0);
      expect(up.output()).toMatch(/stopping: draining subscriptions/);
      for (const pid of children) expect(isAlive(pid), `child ${pid} outlived toolbus`).toBe(false);
      // The processes it stopped were its own: an unrelated server is untouched.
      expect(isAlive(unrelated.child.pid!)).toBe(true);
    });
  }

  it("SIGTERM while the workers are still starting: they start, then stop gracefully; exit 0, no child left", async () => {
    const up = runToolbus(["--config", config(), "--nats", nats.url, "up"]);
    await waitFor("toolbus to begin starting its workers", () => up.output().includes("starting toolbus"), 20_000);
    up.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    expect(up.output()).toMatch(/signal received/);
    expect(up.output()).toMatch(/"msg":"stopped"/);
    const started = [...up.output().matchAll(/"pid":(\d+)[^\n]*"msg":"(?:launched backend server|started backend process)/g)].map((m) => Number(m[1]));
    for (const pid of started) expect(isAlive(pid), `backend ${pid} outlived toolbus`).toBe(false);
  });

  it("calls still out when the grace period ends are cancelled at the backend and answered CANCELLED; exit 0", async () => {
    const config = writeConfig({ admin: { port: -1 }, heartbeat: 200, shutdownGrace: "500ms", backends: { fault: faultStdio(1) } });
    const up = runToolbus(["--config", config, "--nats", nats.url, "up"]);
    await waitForBackends(client, ["fault"]);
    const slow = client.callTool("fault", "sleep", { ms: 20_000 }, { timeoutMs: 30_000 }).then(
      () => "completed",
      (err: { code?: string }) => err.code,
    );
    await new Promise((r) => setTimeout(r, 200));
    const signalled = performance.now();
    up.kill("SIGTERM");
    expect(await slow).toBe("CANCELLED");
    expect(performance.now() - signalled).toBeLessThan(3_000);
    expect(await up.exited).toBe(0);
    expect(up.output()).toMatch(/grace period over; cancelling the calls still in flight/);
  });

  it("a call waiting for a rate-limit slot when the grace period ends is answered CANCELLED at once", async () => {
    const config = writeConfig({
      admin: { port: -1 },
      heartbeat: 200,
      shutdownGrace: "300ms",
      backends: { fault: { ...faultStdio(1), rateLimit: { rate: 0.2, burst: 1 } } },
    });
    const up = runToolbus(["--config", config, "--nats", nats.url, "up"]);
    await waitForBackends(client, ["fault"]);
    await client.callTool("fault", "echo", { message: "takes the only token" }, { timeoutMs: 5_000 });
    // The next token is 5 s away: this call waits on a timer inside the caller.
    const waiting = client.callTool("fault", "echo", { message: "waits" }, { timeoutMs: 20_000 }).then(
      () => "completed",
      (err: { code?: string }) => err.code,
    );
    await new Promise((r) => setTimeout(r, 200));
    const signalled = performance.now();
    up.kill("SIGTERM");
    expect(await waiting).toBe("CANCELLED");
    expect(performance.now() - signalled).toBeLessThan(2_000);
    expect(await up.exited).toBe(0);
  });

  it("a second Ctrl-C exits at once, and still takes every backend process down", async () => {
    const up = runToolbus(["--config", config(), "--nats", nats.url, "up"], { detached: true });
    await waitForBackends(client, ["fault"]);
    const children = await childPids(up.child.pid!);
    expect(children.length).toBe(3);
    // A call in flight keeps the first Ctrl-C waiting; the second one does not wait.
    void client.callTool("fault", "sleep", { ms: 5_000 }, { timeoutMs: 10_000 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-up.child.pid!, "SIGINT");
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-up.child.pid!, "SIGINT");
    expect(await up.exited).toBe(1);
    await waitFor("every backend process to exit", () => children.every((pid) => !isAlive(pid)), 5_000);
  });
});
