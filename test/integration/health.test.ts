import { describe, expect, it } from "vitest";
import { startCaller, type CallerWorker } from "@toolbus/caller";
import { createLogger, createMetrics } from "@toolbus/runtime";
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { HealthEventSchema, kvBuckets, subjects, type HealthEvent, type HealthTableReply } from "@toolbus/protocol";
import { faultStdio, freePort, httpBackend, startEverythingHttp, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { startInProcess, startStack, testConfig, waitFor, type Stack } from "../helpers/toolbus.js";

const caller = (stack: Stack, backend: string) => stack.toolbus.workers.find((w) => w.name === `caller:${backend}`) as CallerWorker;

/** Every health event of `backend`, as they come, with when they came. */
function record(stack: Stack, backend: string): Array<HealthEvent & { at: number }> {
  const events: Array<HealthEvent & { at: number }> = [];
  stack.client.nc.subscribe(subjects.healthEvents(backend), {
    callback: (_e, m) => {
      const parsed = HealthEventSchema.safeParse(m.json());
      if (parsed.success) events.push({ ...parsed.data, at: performance.now() });
    },
  });
  return events;
}

async function code(stack: Stack, backend: string): Promise<string> {
  try {
    await stack.client.callTool(backend, "echo", { message: "x" }, { timeoutMs: 3_000 });
    return "ok";
  } catch (err) {
    if (isToolbusError(err)) return err.code;
    throw err;
  }
}

// A 250 ms interval: unhealthy after 3 failed probes, healthy after 2 good ones. The breaker's own
// recovery time is long, so a half-open breaker here can only be the prober's doing.
const health = { interval: "250ms", timeout: "200ms" };
const INTERVAL = 250;

describe.each([
  ["the fault server", (port?: number) => startFaultHttp(port)],
  ["server-everything", (port?: number) => startEverythingHttp(port)],
] as const)("health prober, against %s over HTTP", (_name, start) => {
  it("killed: an unhealthy event within interval × 3 (+ 1 s); the breaker is open within 1 s of it and calls get CIRCUIT_OPEN; back: healthy, half-open, calls succeed", async () => {
    let server: HttpServerProcess = await start();
    await using stack = await startStack({ backends: { web: { ...httpBackend(server.url), health, breaker: { recovery: "60s" } } } });
    try {
      const events = record(stack, "web");
      await stack.client.nc.flush();
      await waitFor("the endpoint to be healthy", async () => {
        const reply = (await stack.client.nc.request(subjects.healthGet(), new Uint8Array(), { timeout: 1_000 })).json<HealthTableReply>();
        return reply.endpoints.some((e) => e.endpoint === "web#0" && e.state === "healthy");
      });
      expect(await code(stack, "web")).toBe("ok");

      const port = server.port;
      const killedAt = performance.now();
      await server.stop();
      await waitFor("an unhealthy event", () => events.some((e) => e.change && e.state === "unhealthy"), 10_000);
      const unhealthy = events.find((e) => e.change && e.state === "unhealthy")!;
      expect(unhealthy).toMatchObject({ backend: "web", endpoint: "web#0", previous: "healthy" });
      expect(unhealthy.at - killedAt).toBeLessThan(INTERVAL * 3 + 1_000);
      await waitFor("the caller's breaker to open", () => caller(stack, "web").breakerStates()["web#0"] === "open", 1_000);
      // No call goes near the dead socket: the breaker answers.
      for (let i = 0; i < 5; i++) expect(await code(stack, "web")).toBe("CIRCUIT_OPEN");

      server = await start(port);
      await waitFor("a healthy event", () => events.some((e) => e.change && e.state === "healthy" && e.previous === "unhealthy"), 10_000);
      await waitFor("calls to succeed", async () => (await code(stack, "web")) === "ok", 5_000);
      expect(caller(stack, "web").breakerStates()["web#0"]).toBe("closed");
    } finally {
      await server.stop();
    }
  });
});

describe("health state for late joiners", () => {
  it("KV toolbus_health holds the latest state per endpoint, and toolbus.v1.health.get answers the same table", async () => {
    await using server = await startFaultHttp();
    await using stack = await startStack({ admin: { port: 0 }, backends: { web: { ...httpBackend(server.url), health } } });
    const kv = await stack.client.nc.jetstream().views.kv(kvBuckets.health);
    await waitFor("the state in KV", async () => (await kv.get("web.0"))?.json<HealthEvent>().state === "healthy");
    const stored = (await kv.get("web.0"))!.json<HealthEvent>();
    expect(stored).toMatchObject({ backend: "web", endpoint: "web#0", state: "healthy", previous: "unknown", change: true });
    const table = (await stack.client.nc.request(subjects.healthGet(), new Uint8Array(), { timeout: 1_000 })).json<HealthTableReply>();
    expect(table.ok).toBe(true);
    expect(table.endpoints).toEqual([expect.objectContaining({ endpoint: "web#0", state: stored.state, since: stored.since })]);
    // And on /metrics.
    const metrics = await (await fetch(`http://127.0.0.1:${stack.toolbus.adminPort}/metrics`)).text();
    expect(metrics).toContain('toolbus_health_state{backend="web",endpoint="web#0"} 1');
    expect(metrics).toMatch(/toolbus_health_probe_duration_seconds_count\{backend="web",endpoint="web#0"\} [1-9]/);
  });

  it("a caller that starts after the endpoint went unhealthy reads it from KV: its breaker is open from the start", async () => {
    const server = await startFaultHttp();
    await using stack = await startStack({ backends: { web: { ...httpBackend(server.url), health } } });
    await server.stop();
    const kv = await stack.client.nc.jetstream().views.kv(kvBuckets.health);
    await waitFor("the unhealthy state in KV", async () => (await kv.get("web.0"))?.json<HealthEvent>().state === "unhealthy", 10_000);
    // A second caller of the same backend, started now.
    const late = await startCaller(
      { nc: stack.toolbus.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "late-caller" },
      {
        backend: testConfig(stack.nats.url, { backends: { web: httpBackend(server.url) } }).backends.web!,
        limits: testConfig(stack.nats.url, {}).limits,
        heartbeatMs: 200,
      },
    );
    try {
      expect(late.breakerStates()).toEqual({ "web#0": "open" });
    } finally {
      await late.stop(0);
    }
  });
});

describe("stdio children, reported by the caller that owns them", () => {
  it("a hung child: unhealthy from its caller's pings, the breaker opens; unblocked: healthy again, calls succeed; the prober never starts a copy", async () => {
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), health, breaker: { recovery: "60s" }, retry: { maxRetries: 0 } } } });
    const owner = caller(stack, "fault");
    const callerId = (await stack.client.callerStatus())[0]!.workerId;
    const events = record(stack, "fault");
    await stack.client.nc.flush();
    await waitFor("the child to be reported healthy", async () => {
      const reply = (await stack.client.nc.request(subjects.healthGet(), new Uint8Array(), { timeout: 1_000 })).json<HealthTableReply>();
      return reply.endpoints.some((e) => e.endpoint === "fault#0" && e.caller === callerId && e.state === "healthy");
    });
    const pid = owner.endpoints[0]!.pid;

    // The child stops answering anything, pings included, for 2.5 s.
    const blocked = stack.client.callTool("fault", "block", { ms: 2_500 }, { timeoutMs: 10_000 }).catch(() => undefined);
    await waitFor("an unhealthy event from the caller's reports", () => events.some((e) => e.change && e.state === "unhealthy"), 5_000);
    expect(events.find((e) => e.change && e.state === "unhealthy")).toMatchObject({ backend: "fault", endpoint: "fault#0", caller: callerId });
    await waitFor("the breaker to open", () => owner.breakerStates()["fault#0"] === "open", 1_000);
    expect(await code(stack, "fault")).toBe("CIRCUIT_OPEN");
    await blocked;

    await waitFor("a healthy event", () => events.some((e) => e.change && e.state === "healthy" && e.previous === "unhealthy"), 5_000);
    await waitFor("calls to succeed", async () => (await code(stack, "fault")) === "ok", 5_000);
    // The same child all along: nobody started another.
    expect(owner.endpoints[0]!.pid).toBe(pid);
  });
});

describe("events anyone may publish", () => {
  it("garbage on the health, move and report subjects is ignored: callers and the prober keep serving", async () => {
    await using server = await startFaultHttp();
    await using stack = await startStack({ backends: { web: { ...httpBackend(server.url), health } } });
    const junk = new TextEncoder().encode("{not json");
    for (const subject of [subjects.healthEvents("web"), subjects.endpointEvents("web"), subjects.healthReport("web")]) stack.client.nc.publish(subject, junk);
    stack.client.nc.publish(subjects.healthEvents("web"), new TextEncoder().encode(JSON.stringify({ backend: "web", state: "nonsense" })));
    await stack.client.nc.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(await code(stack, "web")).toBe("ok");
    expect((await stack.client.health()).map((e) => e.endpoint)).toEqual(["web#0"]);
  });
});

describe("a stdio child killed", () => {
  it("its caller reports it down, the state changes (unhealthy at the first failure here), and healthy again once it is restarted", async () => {
    // Reports every 100 ms: the child is down for a few hundred (backoff, spawn, initialize).
    await using stack = await startStack({ backends: { fault: { ...faultStdio(1), health: { ...health, interval: "100ms", unhealthyAfter: 1 } } } });
    const owner = caller(stack, "fault");
    const events = record(stack, "fault");
    await stack.client.nc.flush();
    await waitFor(
      "the child to be reported healthy",
      async () => (await stack.client.health()).some((e) => e.endpoint === "fault#0" && e.state === "healthy"),
      5_000,
    );
    const pid = owner.endpoints[0]!.pid!;
    // Only what follows the kill (a report during start-up, before the child answered, may have flapped).
    events.length = 0;
    process.kill(pid, "SIGKILL");
    await waitFor("an unhealthy event", () => events.some((e) => e.change && e.state === "unhealthy"), 5_000);
    expect(events.find((e) => e.change && e.state === "unhealthy")!.reason).toMatch(/not connected|connection closed/);
    await waitFor("healthy again, with a new child", () => events.some((e) => e.change && e.state === "healthy" && e.previous === "unhealthy"), 5_000);
    expect(owner.endpoints[0]!.pid).not.toBe(pid);
  });
});

describe("the prober through outages of its own", () => {
  it("a backend down at start is found when it comes up, and calls succeed", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/mcp`;
    const nats = await startNats();
    const config = testConfig(nats.url, { backends: { web: { ...httpBackend(url), health } } });
    const toolbus = await startInProcess(config);
    const client = await ToolbusClient.connect({ servers: nats.url });
    let server: HttpServerProcess | undefined;
    try {
      // Asked, not subscribed: the first change may come before a subscription would be in place.
      const state = async (): Promise<string | undefined> => (await client.health()).find((e) => e.endpoint === "web#0")?.state;
      await waitFor("the endpoint to be reported unhealthy", async () => (await state()) === "unhealthy", 5_000);
      server = await startFaultHttp(port);
      await waitFor("the endpoint to be healthy", async () => (await state()) === "healthy", 5_000);
      await waitFor("calls to succeed", async () => {
        try {
          await client.callTool("web", "echo", { message: "up" }, { timeoutMs: 2_000 });
          return true;
        } catch {
          return false;
        }
      });
    } finally {
      await client.close();
      await toolbus.stop();
      await server?.stop();
      await nats[Symbol.asyncDispose]();
    }
  });

  it("NATS restarted: probing and events resume, with no restart of the prober", async () => {
    await using server = await startFaultHttp();
    await using stack = await startStack({ backends: { web: { ...httpBackend(server.url), health } } });
    await stack.nats.stop();
    await new Promise((r) => setTimeout(r, 500));
    await stack.nats.start();
    const restartedAt = Date.now();
    const events: HealthEvent[] = [];
    await waitFor("the client to be back", async () => {
      await stack.client.nc.flush();
      return true;
    });
    stack.client.nc.subscribe(subjects.healthEvents("web"), { callback: (_e, m) => events.push(m.json<HealthEvent>()) });
    // Heartbeats (every 5 heartbeat intervals: 1 s here) flow again ...
    await waitFor("a health event after the restart", () => events.some((e) => Date.parse(e.time) > restartedAt && e.state === "healthy"), 10_000);
    // ... and so do the probes: the server's death is noticed and published.
    await server.stop();
    await waitFor("an unhealthy change after the restart", () => events.some((e) => e.change && e.state === "unhealthy"), 10_000);
    const table = (await stack.client.nc.request(subjects.healthGet(), new Uint8Array(), { timeout: 2_000 })).json<HealthTableReply>();
    expect(table.endpoints).toEqual([expect.objectContaining({ endpoint: "web#0", state: "unhealthy" })]);
  });
});
