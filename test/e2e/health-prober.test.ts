import { connect } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { kvBuckets, type HealthEvent } from "@toolbus/protocol";
import { proberFixture, type Cleanup } from "../helpers/health.js";
import { runToolbus, toolbusCommand, waitFor } from "../helpers/toolbus.js";

describe("toolbus worker health-prober, as a user runs it", () => {
  const cleanup: Cleanup = [];
  afterAll(async () => {
    for (const step of cleanup.reverse()) await step();
  });

  it("`toolbus health` shows the endpoint healthy (exit 0), then unhealthy once its server is killed (exit 4); SIGTERM stops the prober with exit 0", async () => {
    const { nats, server, config } = await proberFixture(cleanup);
    const prober = runToolbus(["--config", config, "--nats", nats.url, "worker", "health-prober"]);
    cleanup.push(() => prober.kill("SIGKILL"));

    const health = () => toolbusCommand(["--config", config, "--nats", nats.url, "health", "--json"]);
    let last = { code: -1, stdout: "", stderr: "" };
    await waitFor("the endpoint to be healthy", async () => {
      last = await health();
      return last.code === 0;
    });
    expect(JSON.parse(last.stdout)).toEqual([expect.objectContaining({ backend: "web", endpoint: "web#0", state: "healthy" })]);
    // A late subscriber reads the same from KV.
    const nc = await connect({ servers: nats.url });
    cleanup.push(() => nc.close());
    const stored = (await (await nc.jetstream().views.kv(kvBuckets.health, { bindOnly: true })).get("web.0"))!.json<HealthEvent>();
    const shown = (JSON.parse(last.stdout) as HealthEvent[])[0]!;
    expect({ state: stored.state, since: stored.since, previous: stored.previous }).toEqual({
      state: shown.state,
      since: shown.since,
      previous: shown.previous,
    });

    await server.stop();
    await waitFor("the endpoint to be unhealthy", async () => {
      last = await health();
      return last.code === 4;
    });
    expect(JSON.parse(last.stdout)).toEqual([expect.objectContaining({ endpoint: "web#0", state: "unhealthy", previous: "healthy" })]);
    const plain = await toolbusCommand(["--config", config, "--nats", nats.url, "health"]);
    expect(plain.code).toBe(4);
    expect(plain.stdout).toMatch(/web#0\s+unhealthy/);

    prober.kill("SIGTERM");
    expect(await prober.exited).toBe(0);
    expect(prober.output()).not.toMatch(/"level":50/);
  });
});
