import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { faultStdio } from "../helpers/mcp.js";
import { servedByInstance } from "../helpers/services.js";
import { childPids, isAlive, removeTempDirs, runToolbus, waitFor, waitForBackends, writeConfig, type ToolbusProcess } from "../helpers/toolbus.js";

describe("two routers and two callers of one backend", () => {
  let nats: TestNats;
  let client: ToolbusClient;
  const procs: ToolbusProcess[] = [];
  let callers: ToolbusProcess[] = [];

  beforeAll(async () => {
    nats = await startNats();
    const config = writeConfig({ nats: { servers: [nats.url] }, admin: { port: -1 }, heartbeat: 200, backends: { fault: faultStdio(1) } });
    const env = { TOOLBUS_LOG_LEVEL: "warn" };
    const routers = [0, 1].map(() => runToolbus(["--config", config, "worker", "router"], { env }));
    callers = [0, 1].map(() => runToolbus(["--config", config, "worker", "caller", "--backend", "fault"], { env }));
    procs.push(...routers, ...callers);
    client = await ToolbusClient.connect({ servers: nats.url });
    await waitForBackends(client, ["fault"]);
    // Each router learns the callers on its own; ten answers in a row (from either router, at random)
    // that know both callers make it all but certain that both routers do.
    let streak = 0;
    await waitFor("both routers to know both callers", async () => {
      const [fault] = await client.listTools("fault");
      streak = fault?.liveCallers === 2 && fault.tools !== null ? streak + 1 : 0;
      return streak >= 10;
    });
  });
  afterAll(async () => {
    await client?.close();
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  /** Requests served by each instance of a service, from the NATS services API. */
  const servedBy = (service: string): Promise<number[]> => servedByInstance(client.nc, service, (e) => e.name === "call");

  it("both replicas of each worker serve", async () => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => client.callTool("fault", "echo", { message: `m${i}` }, { timeoutMs: 5_000 })));
    const routers = await servedBy("toolbus-router");
    const callerCounts = await servedBy("toolbus-caller");
    expect(routers).toHaveLength(2);
    expect(callerCounts).toHaveLength(2);
    for (const n of [...routers, ...callerCounts]) expect(n).toBeGreaterThan(10);
  });

  it("a caller SIGKILLed during a stream of calls: each call gets a result or a typed error within its deadline, then calls succeed again", async () => {
    const victim = callers[0]!;
    const victimChildren = await childPids(victim.child.pid!);
    expect(victimChildren.length).toBe(1);

    const budget = 1_500;
    const outcomes: Array<{ ok: boolean; code?: string; ms: number; startedAt: number }> = [];
    const t0 = performance.now();
    let killedAt = Number.POSITIVE_INFINITY;
    setTimeout(() => {
      killedAt = performance.now() - t0;
      victim.kill("SIGKILL");
    }, 400);

    // 8 workers of sequential calls, each call holding the backend ~20 ms, for ~2.5 s.
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (performance.now() - t0 < 2_500) {
          const startedAt = performance.now() - t0;
          try {
            await client.callTool("fault", "sleep", { ms: 20 }, { timeoutMs: budget });
            outcomes.push({ ok: true, ms: performance.now() - t0 - startedAt, startedAt });
          } catch (err) {
            if (!isToolbusError(err)) throw err;
            outcomes.push({ ok: false, code: err.code, ms: performance.now() - t0 - startedAt, startedAt });
          }
        }
      }),
    );

    expect(outcomes.length).toBeGreaterThan(100);
    // Nobody waited past the deadline (the client's grace for the typed answer included).
    for (const o of outcomes) expect(o.ms).toBeLessThan(budget + 150);
    // Calls that started a second after the kill all succeeded: no restart of anything else needed.
    const late = outcomes.filter((o) => o.startedAt > killedAt + 1_000);
    expect(late.length).toBeGreaterThan(20);
    expect(late.every((o) => o.ok)).toBe(true);
    // The ones that failed were in flight on the victim: typed, not lost.
    for (const o of outcomes.filter((x) => !x.ok)) expect(["DEADLINE_EXCEEDED", "BACKEND_UNAVAILABLE"]).toContain(o.code);

    expect(await victim.exited).toBe("SIGKILL");
    // The killed caller's MCP child saw its stdin close and exited: nothing outlives the caller.
    await waitFor("the killed caller's child to exit", () => victimChildren.every((pid) => !isAlive(pid)), 5_000);
  });
});
