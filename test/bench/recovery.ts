/**
 * Recovery figures for `npm run bench`: how long after a backend dies calls are refused without
 * touching it, with the health prober (1 s interval, unhealthy after 3) and without it (calls must fail
 * first); and how long after a backend starts listening on another port of its range calls succeed.
 * One toolbus process (as users run it), the fault server as the backend, 10 calls/s per backend.
 */
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { HealthEventSchema, subjects } from "@toolbus/protocol";
import { freePort, startFaultHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { runToolbus, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";
import { NODE_FLAGS } from "./startup.js";

export interface RecoveryFigures {
  /** ms from the kill to the first call refused with CIRCUIT_OPEN (health-driven). */
  healthDrivenOpenMs: number;
  /** ms from the kill to the unhealthy event. */
  unhealthyEventMs: number;
  /** ms from the kill to the first call refused without reaching the backend, without a prober. */
  failureDrivenRefusedMs: number;
  /** ms from the kill to the first refusal code seen without a prober, and that code. */
  failureDrivenCode: string;
  /** ms from the server listening on a new port to the first successful call. */
  newPortFirstSuccessMs: number;
}

async function outcome(client: ToolbusClient, backend: string): Promise<string> {
  try {
    await client.callTool(backend, "echo", { message: "r" }, { timeoutMs: 2_000 });
    return "ok";
  } catch (err) {
    return isToolbusError(err) ? err.code : "error";
  }
}

/** Call every 100 ms until `done(code)`; resolves with the ms since `from` when it was. */
async function until(
  client: ToolbusClient,
  backend: string,
  from: number,
  done: (code: string) => boolean,
  limitMs = 30_000,
): Promise<{ ms: number; code: string }> {
  for (;;) {
    const code = await outcome(client, backend);
    const ms = performance.now() - from;
    if (done(code)) return { ms: Math.round(ms), code };
    if (ms > limitMs) throw new Error(`${backend}: no "${done}" within ${limitMs} ms (last: ${code})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function recoveryBench(natsUrl: string): Promise<RecoveryFigures> {
  const [a, b, c] = await Promise.all([freePort(), freePort(), freePort()]);
  const servers: HttpServerProcess[] = await Promise.all([startFaultHttp(a), startFaultHttp(b), startFaultHttp(c)]);
  const range: [number, number] = [c, Math.min(65535, c + 15)];
  const config = writeConfig({
    admin: { port: -1 },
    log: { level: "warn" },
    backends: {
      // With the prober: probed every second.
      healthy: { kind: "mcp-http", url: `http://127.0.0.1:${a}/mcp`, health: { interval: "1s" } },
      // Without it, in effect: its first probe would come in half an hour.
      unprobed: { kind: "mcp-http", url: `http://127.0.0.1:${b}/mcp`, health: { interval: "1h" } },
      moving: { kind: "mcp-http", url: `http://127.0.0.1:${c}/mcp`, health: { interval: "1s" }, rediscover: { portRange: range } },
    },
  });
  const up = runToolbus(["--config", config, "--nats", natsUrl, "up"], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs: NODE_FLAGS });
  const client = await ToolbusClient.connect({ servers: natsUrl });
  try {
    await waitForBackends(client, ["healthy", "unprobed", "moving"], 30_000);
    await waitFor("the prober to see the endpoints healthy", async () => {
      const table = await client.health();
      return ["healthy#0", "moving#0"].every((id) => table.some((e) => e.endpoint === id && e.state === "healthy"));
    });
    let unhealthyAt = 0;
    client.nc.subscribe(subjects.healthEvents("healthy"), {
      callback: (_e, m) => {
        const parsed = HealthEventSchema.safeParse(m.json());
        if (parsed.success && parsed.data.change && parsed.data.state === "unhealthy") unhealthyAt ||= performance.now();
      },
    });

    // 1. Death: the probed backend and the unprobed one, side by side.
    const killedAt = performance.now();
    await Promise.all([servers[0]!.stop(), servers[1]!.stop()]);
    const [probed, unprobed] = await Promise.all([
      until(client, "healthy", killedAt, (code) => code === "CIRCUIT_OPEN"),
      until(client, "unprobed", killedAt, (code) => code !== "ok"),
    ]);

    // 2. A move: the server is gone for 4 s (unhealthy, a scan that finds nothing), then listens elsewhere.
    await servers[2]!.stop();
    await new Promise((r) => setTimeout(r, 4_000));
    servers[2] = await startFaultHttp(range[0] + 5);
    const listeningAt = performance.now();
    const moved = await until(client, "moving", listeningAt, (code) => code === "ok");

    return {
      healthDrivenOpenMs: probed.ms,
      unhealthyEventMs: Math.round(unhealthyAt - killedAt),
      failureDrivenRefusedMs: unprobed.ms,
      failureDrivenCode: unprobed.code,
      newPortFirstSuccessMs: moved.ms,
    };
  } finally {
    await client.close();
    up.kill("SIGTERM");
    await up.exited;
    await Promise.all(servers.map((s) => s.stop()));
  }
}
