import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { caller, router } from "@toolbus/cli";
import { compileConfig } from "@toolbus/config";
import type { RouterWorker } from "@toolbus/router";
import { createLogger, runWorkers, type RunningProcess } from "@toolbus/runtime";
import { faultStdio } from "../helpers/mcp.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { ROOT } from "../helpers/paths.js";
import { isAlive, removeTempDirs, runToolbus, waitFor, waitForBackends, writeConfig, type ToolbusProcess } from "../helpers/toolbus.js";

describe("a cache worker killed (SIGKILL) under load", () => {
  let nats: TestNats;
  let client: ToolbusClient;
  let toolbus: RunningProcess;
  let cache: ToolbusProcess | undefined;

  const raw = { admin: { port: -1 }, log: { level: "silent" }, heartbeat: 200, cache: { enabled: true }, backends: { fault: faultStdio() } };

  beforeAll(async () => {
    nats = await startNats();
    const config = compileConfig({ ...raw, admin: { port: 0 }, nats: { servers: [nats.url] } }, { baseDir: ROOT, source: "(test)" });
    // Router and caller here; the cache in a process of its own, so that it can be killed.
    toolbus = await runWorkers({
      name: "toolbus-test",
      config,
      logger: createLogger({ level: "silent" }),
      start: async (deps) => [await router(deps, config), await caller(deps, config, "fault")],
    });
    client = await ToolbusClient.connect({ servers: nats.url });
    await waitForBackends(client, ["fault"]);
  });
  afterAll(async () => {
    cache?.kill("SIGKILL");
    await client?.close();
    await toolbus?.stop();
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  it("every call still succeeds, as a miss, within its deadline; the router stops handing calls to it", async () => {
    cache = runToolbus(["--config", writeConfig({ ...raw, log: { level: "info" } }), "--nats", nats.url, "worker", "cache"]);
    const routerWorker = toolbus.workers.find((w) => w.name === "router") as RouterWorker;
    await waitFor("the router to see the cache", () => routerWorker.cache!.available(), 20_000);

    const outcomes: Array<{ ok: boolean; cached?: string | false; code?: string; ms: number; afterKill: boolean }> = [];
    let killed = false;
    let stop = false;
    const TIMEOUT_MS = 3_000;
    const lane = async (lane: number) => {
      for (let i = 0; !stop; i++) {
        const started = Date.now();
        const afterKill = killed;
        try {
          // 20 distinct argument sets: hits and misses both flow while the cache dies.
          const { meta } = await client.callTool("fault", "echo", { message: `m${(lane * 7 + i) % 20}` }, { timeoutMs: TIMEOUT_MS });
          outcomes.push({ ok: true, cached: meta.cached, ms: Date.now() - started, afterKill });
        } catch (err) {
          outcomes.push({ ok: false, code: isToolbusError(err) ? err.code : String(err), ms: Date.now() - started, afterKill });
        }
      }
    };
    const lanes = Array.from({ length: 8 }, (_, i) => lane(i));
    await new Promise((r) => setTimeout(r, 1_000));
    cache.kill("SIGKILL");
    killed = true;
    expect(await cache.exited).toBe("SIGKILL");
    await new Promise((r) => setTimeout(r, 1_500));
    stop = true;
    await Promise.all(lanes);

    const failures = outcomes.filter((o) => !o.ok);
    expect(failures, JSON.stringify(failures.slice(0, 5))).toEqual([]);
    expect(outcomes.every((o) => o.ms < TIMEOUT_MS)).toBe(true);
    // The cache answered before it died, and nothing answered from it after.
    expect(outcomes.some((o) => !o.afterKill && o.cached === "l1")).toBe(true);
    const after = outcomes.filter((o) => o.afterKill);
    expect(after.length).toBeGreaterThan(20);
    expect(after.every((o) => o.cached === false)).toBe(true);
    expect(routerWorker.cache!.available()).toBe(false);
    // The calls the dead cache held, and those handed to it before the router noticed, were sent on by the router.
    const metrics = await (await fetch(`http://127.0.0.1:${toolbus.adminPort}/metrics`)).text();
    const rescued = Number(/toolbus_cache_handoffs_total\{outcome="rescued"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    expect(rescued).toBeGreaterThan(0);
    expect(isAlive(cache.child.pid!)).toBe(false);
  });
});
