import { describe, expect, it } from "vitest";
import { startCaller, type CallerWorker } from "@toolbus/caller";
import { isToolbusError } from "@toolbus/client";
import { EndpointMovedSchema, HealthEventSchema, subjects, type EndpointMoved, type HealthEvent } from "@toolbus/protocol";
import { createLogger, createMetrics } from "@toolbus/runtime";
import { freePort, startEverythingHttp, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startStack, testConfig, waitFor, type Stack } from "../helpers/toolbus.js";

/** Start a server on the first port of `range` from `offset` on that is free (others may be taken by now). */
async function startInRange(
  range: [number, number],
  offset: number,
  start: (port: number) => Promise<HttpServerProcess>,
): Promise<{ server: HttpServerProcess; port: number }> {
  for (let port = range[0] + offset; ; port++) {
    try {
      return { server: await start(port), port };
    } catch (err) {
      if (port >= range[1] || !/EADDRINUSE/.test(String(err))) throw err;
    }
  }
}

/** A range of 16 ports starting at a free one (others in it may be taken: only the right server is accepted). */
async function portRange(): Promise<[number, number]> {
  const from = await freePort();
  return [from, Math.min(65535, from + 15)];
}

function watch(stack: Stack): { moves: EndpointMoved[]; health: HealthEvent[] } {
  const moves: EndpointMoved[] = [];
  const health: HealthEvent[] = [];
  stack.client.nc.subscribe(subjects.endpointEvents("web"), {
    callback: (_e, m) => {
      const parsed = EndpointMovedSchema.safeParse(m.json());
      if (parsed.success) moves.push(parsed.data);
    },
  });
  stack.client.nc.subscribe(subjects.healthEvents("web"), {
    callback: (_e, m) => {
      const parsed = HealthEventSchema.safeParse(m.json());
      if (parsed.success && parsed.data.change) health.push(parsed.data);
    },
  });
  return { moves, health };
}

async function echoes(stack: Stack): Promise<boolean> {
  try {
    await stack.client.callTool("web", "echo", { message: "x" }, { timeoutMs: 2_000 });
    return true;
  } catch (err) {
    if (isToolbusError(err)) return false;
    throw err;
  }
}

const web = (port: number, range: [number, number], extra: Record<string, unknown> = {}) => ({
  kind: "mcp-http",
  url: `http://127.0.0.1:${port}/mcp`,
  health: { interval: "250ms", timeout: "200ms" },
  rediscover: { portRange: range, ...extra },
});

describe("port rediscovery", () => {
  it("a server restarted on another port of the range is found; calls succeed with no config change; a caller started later uses the new port", async () => {
    const range = await portRange();
    let server: HttpServerProcess = await startFaultHttp(range[0]);
    await using stack = await startStack({ backends: { web: web(range[0], range) } });
    const { moves } = watch(stack);
    await stack.client.nc.flush();
    try {
      expect(await echoes(stack)).toBe(true);
      await server.stop();
      // Somewhere else in the range, as a laptop server or a pod without a stable port comes back.
      // A port of the range that nothing else took meanwhile (an outgoing connection may hold any).
      const started = await startInRange(range, 7, (p) => startFaultHttp(p));
      server = started.server;
      const newPort = started.port;
      await waitFor("the move to be published", () => moves.length > 0, 15_000);
      expect(moves[0]).toMatchObject({ backend: "web", endpoint: "web#0", oldPort: range[0], newPort, server: "toolbus-fault-server" });
      await waitFor("calls to succeed on the new port", () => echoes(stack), 10_000);

      const late: CallerWorker = await startCaller(
        { nc: stack.toolbus.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "late-caller" },
        {
          backend: testConfig(stack.nats.url, { backends: { web: web(range[0], range) } }).backends.web!,
          limits: testConfig(stack.nats.url, {}).limits,
          heartbeatMs: 200,
        },
      );
      try {
        // Its configured port is dead: being live means it went to the new one (from KV).
        await waitFor("the late caller to connect", () => late.endpoints[0]!.live, 5_000);
      } finally {
        await late.stop(0);
      }
    } finally {
      await server.stop();
    }
  });

  it("a different MCP server on a port of the range is not accepted", async () => {
    const range = await portRange();
    const server = await startFaultHttp(range[0]);
    await using stack = await startStack({ backends: { web: web(range[0], range, { maxAttempts: 2 }) } });
    const { moves, health } = watch(stack);
    await stack.client.nc.flush();
    let other: HttpServerProcess | undefined;
    try {
      await server.stop();
      ({ server: other } = await startInRange(range, 3, (p) => startEverythingHttp(p)));
      // Lost: both scans of the range ran, and passed server-everything by.
      await waitFor("the endpoint to be lost", () => health.some((e) => e.state === "lost"), 10_000);
      expect(moves).toEqual([]);
    } finally {
      await other?.stop();
    }
  });

  it("not found within maxAttempts: lost, and the prober keeps going: found when it comes back", async () => {
    const range = await portRange();
    let server: HttpServerProcess = await startFaultHttp(range[0]);
    await using stack = await startStack({ backends: { web: web(range[0], range, { maxAttempts: 1 }) } });
    const { health } = watch(stack);
    await stack.client.nc.flush();
    try {
      await server.stop();
      await waitFor("the endpoint to be lost", () => health.some((e) => e.state === "lost"), 10_000);
      server = await startFaultHttp(range[0]);
      await waitFor("the endpoint to be healthy again", () => health.some((e) => e.state === "healthy" && e.previous === "lost"), 10_000);
      await waitFor("calls to succeed", () => echoes(stack), 10_000);
    } finally {
      await server.stop();
    }
  });
});
