import { describe, expect, it } from "vitest";
import { startCaller } from "@toolbus/caller";
import { ToolbusClient } from "@toolbus/client";
import { createLogger, newWorkerId, runWorkers } from "@toolbus/runtime";
import { startRouter } from "@toolbus/router";
import { startNats } from "../helpers/nats-server.js";
import { faultStdio } from "../helpers/mcp.js";
import { testConfig, waitFor } from "../helpers/toolbus.js";

describe("router catalog", () => {
  it("a router that starts among running callers serves them at once, without waiting for a heartbeat", async () => {
    await using nats = await startNats();
    // Heartbeats an hour apart: only discovery can tell the router about this caller.
    const config = testConfig(nats.url, { heartbeat: "1h", backends: { fault: faultStdio(1) } });
    const logger = createLogger({ level: "silent" });
    const callers = await runWorkers({
      name: "callers",
      config,
      logger,
      start: async (deps) => [
        await startCaller(
          { ...deps, workerId: newWorkerId("caller") },
          { backend: config.backends.fault!, limits: config.limits, heartbeatMs: config.heartbeatMs },
        ),
      ],
    });
    const client = await ToolbusClient.connect({ servers: nats.url });
    try {
      // Let the caller connect to its backend (its first heartbeat, sent before that, had no tools).
      await waitFor("the caller's backend", () => callers.workers[0]!.notReady().length === 0);
      const router = await runWorkers({
        name: "router",
        config,
        logger,
        start: async (deps) => [await startRouter({ ...deps, workerId: newWorkerId("router") }, { backends: ["fault"], limits: config.limits })],
      });
      try {
        const { result } = await client.callTool("fault", "echo", { message: "first" }, { timeoutMs: 2_000 });
        expect(result.content).toEqual([{ type: "text", text: "Echo: first" }]);
        const [fault] = await client.listTools("fault");
        expect(fault?.liveCallers).toBe(1);
      } finally {
        await router.stop();
      }
    } finally {
      await client.close();
      await callers.stop();
    }
  });
});
