import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { connect, type KV } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { kvBuckets, subjects, type HealthTableReply } from "@toolbus/protocol";
import { proberFixture, type Cleanup } from "../helpers/health.js";
import { runToolbus, waitFor, type ToolbusProcess } from "../helpers/toolbus.js";

/** The fault server's count of MCP pings (what health probes send). */
async function pings(url: string): Promise<number> {
  const client = new Client({ name: "test", version: "0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  try {
    const { structuredContent } = await client.callTool({ name: "stats", arguments: {} });
    return (structuredContent as { pings: number }).pings;
  } finally {
    await client.close();
  }
}

describe("two health-prober replicas", () => {
  const cleanup: Cleanup = [];
  afterAll(async () => {
    for (const step of cleanup.reverse()) await step();
  });

  it("probe each endpoint once per interval between them; when the owner is SIGKILLed the other takes over within a few intervals", async () => {
    const { nats, server, config } = await proberFixture(cleanup);
    const probers: ToolbusProcess[] = [0, 1].map(() => runToolbus(["--config", config, "--nats", nats.url, "worker", "health-prober"]));
    cleanup.push(() => probers.forEach((p) => p.kill("SIGKILL")));
    const nc = await connect({ servers: nats.url });
    cleanup.push(() => nc.close());
    // Bind only once the probers made the bucket: opening it first would create it without their TTL.
    let leases: KV | undefined;
    await waitFor("one replica to hold the lease", async () => {
      leases ??= await nc.jetstream().views.kv(kvBuckets.healthLeases, { bindOnly: true });
      return (await leases.get("web"))?.string() !== undefined && (await pings(server.url)) > 4;
    });

    // Over 2 s, one replica's worth of probes (8 at 250 ms), not two (16). A ping of our own adds 0.
    const before = await pings(server.url);
    await new Promise((r) => setTimeout(r, 2_000));
    const during = (await pings(server.url)) - before;
    expect(during).toBeGreaterThanOrEqual(4);
    expect(during).toBeLessThanOrEqual(12);

    // Whichever replica answers (a queue group: either), the table is the same and complete.
    for (let i = 0; i < 6; i++) {
      const table = (await nc.request(subjects.healthGet(), new Uint8Array(), { timeout: 2_000 })).json<HealthTableReply>();
      expect(table.endpoints).toEqual([expect.objectContaining({ endpoint: "web#0", state: "healthy" })]);
    }

    // Kill -9 the owner (it cannot give its lease back): the other takes over when the lease expires.
    const owner = (await leases!.get("web"))!.string();
    const ownerProcess = probers.find((p) => p.output().includes(owner));
    expect(ownerProcess, `owner ${owner}`).toBeDefined();
    ownerProcess!.kill("SIGKILL");
    await ownerProcess!.exited;
    const killedAt = performance.now();
    await waitFor(
      "the other replica to hold the lease",
      async () => {
        const holder = (await leases!.get("web"))?.string();
        return holder !== undefined && holder !== owner;
      },
      10_000,
    );
    const resumed = await pings(server.url);
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await pings(server.url)) - resumed).toBeGreaterThanOrEqual(2);
    // The lease lasts 3 s: the takeover is within a few intervals of that.
    expect(performance.now() - killedAt).toBeLessThan(3_000 + 8 * 250 + 1_000);
  });
});
