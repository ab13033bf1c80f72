import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { CHAT_STREAM, kvBuckets } from "@toolbus/protocol";
import type { RunningProcess } from "@toolbus/runtime";
import { readChatLogs } from "../helpers/chat.js";
import { faultStdio } from "../helpers/mcp.js";
import { containersRequired, hasPodman, startNatsClusterInContainers, stopContainerRuntime } from "../helpers/containers.js";
import { startNatsCluster, type TestNatsCluster } from "../helpers/nats-server.js";
import { removeTempDirs, startInProcess, tempDir, testConfig, waitFor, waitForBackends } from "../helpers/toolbus.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A call's outcome: when it was sent (ms since the start), how long it took, and its error code if it failed. */
interface Outcome {
  at: number;
  ms: number;
  code?: string;
}

/**
 * Run twice: nodes as nats-server processes, and as containers started through testcontainers (podman's
 * Docker-compatible API), so that path runs in CI too, not only on paper.
 */
const layouts = [
  { nodes: "processes", start: () => startNatsCluster(3), skip: false },
  { nodes: "containers (testcontainers on podman)", start: () => startNatsClusterInContainers(3), skip: !hasPodman && !containersRequired },
];

describe.each(layouts)("a three-node NATS JetStream cluster ($nodes) loses a node under steady calls", ({ start, skip }) => {
  let cluster: TestNatsCluster;
  let toolbus: RunningProcess & AsyncDisposable;
  let client: ToolbusClient;
  let watcher: NatsConnection;
  let dir: string;
  /** The node toolbus's workers are connected to: the one whose loss hurts most. */
  let victim: number;

  beforeAll(async () => {
    if (skip) return;
    cluster = await start();
    watcher = await connect({ servers: cluster.urls.split(",") });
    // JetStream is ready once the cluster has elected its meta leader.
    await waitFor("JetStream on the cluster", async () => Boolean(await (await watcher.jetstreamManager()).getAccountInfo()), 30_000);
    dir = tempDir("toolbus-cluster-chat-");
    toolbus = await startInProcess(
      testConfig(cluster.nodes[0]!.url, {
        nats: { servers: cluster.urls.split(","), replicas: 3 },
        chatLog: { enabled: true, dir, batch: { maxWait: 20 } },
        backends: { fault: faultStdio() },
      }),
    );
    victim = cluster.nodes.findIndex((n) => n.port === toolbus.nc.info!.port);
    expect(victim).toBeGreaterThanOrEqual(0);
    // The client is on the nodes that stay up: what is measured is toolbus's own survival.
    client = await ToolbusClient.connect({ servers: cluster.nodes.filter((_, i) => i !== victim).map((n) => n.url) });
    await waitForBackends(client, ["fault"], 20_000);
  }, 90_000);

  afterAll(async () => {
    await client?.close();
    await toolbus?.[Symbol.asyncDispose]();
    await watcher?.close();
    await cluster?.[Symbol.asyncDispose]();
    await stopContainerRuntime();
    removeTempDirs();
  });

  it.skipIf(skip)("keeps streams and buckets on three replicas (nats.replicas: 3)", async () => {
    const jsm = await watcher.jetstreamManager();
    expect((await jsm.streams.info(CHAT_STREAM)).config.num_replicas).toBe(3);
    await waitFor("the health bucket", async () => Boolean(await jsm.streams.info(`KV_${kvBuckets.health}`)), 10_000);
    expect((await (await watcher.jetstream().views.kv(kvBuckets.health, { bindOnly: true })).status()).replicas).toBe(3);
  });

  it.skipIf(skip)(
    "calls go on, chat events are all written, KV stays readable, and the node rejoins",
    async () => {
      const started = performance.now();
      const now = () => performance.now() - started;
      const outcomes: Outcome[] = [];
      const stored: string[] = [];
      let running = true;
      const caller = async () => {
        for (let i = 0; running; i++) {
          const at = now();
          try {
            await client.callTool("fault", "echo", { message: `m${i}` }, { timeoutMs: 3_000 });
            outcomes.push({ at, ms: now() - at });
          } catch (err) {
            // Every failure is typed: a code, not a hang or a stack trace.
            outcomes.push({ at, ms: now() - at, code: isToolbusError(err) ? err.code : `untyped: ${String(err)}` });
            await sleep(20);
          }
        }
      };
      const notStored: string[] = [];
      const chat = async () => {
        for (let i = 0; running; i++) {
          try {
            // Sent again until stored: a stream whose leader was on the lost node elects another (seen: up to 4.8 s).
            stored.push((await client.publishChatEvent({ conversationId: "cluster-loss", type: "user_message", payload: { i } }, { timeoutMs: 15_000 })).id);
          } catch (err) {
            notStored.push(String(err));
          }
          await sleep(25);
        }
      };
      const load = Promise.all([caller(), caller(), caller(), caller(), chat()]);
      let killedAt = 0;
      try {
        await sleep(2_000);
        killedAt = now();
        await cluster.kill(victim);
        await sleep(2_500);
        // While the node is down, the shared state is still readable (two of three replicas).
        const reader = await connect({ servers: cluster.nodes.filter((_, i) => i !== victim).map((n) => n.url) });
        try {
          // A stream whose leader was on the lost node elects another first (a few seconds of raft).
          await waitFor(
            "the health bucket to be readable without the lost node",
            async () => {
              const health = await reader.jetstream({ timeout: 2_000 }).views.kv(kvBuckets.health, { bindOnly: true });
              const keys: string[] = [];
              for await (const k of await health.keys()) keys.push(k);
              return keys.length > 0 && (await health.get(keys[0]!))?.json<{ backend: string }>().backend === "fault";
            },
            15_000,
          );
        } finally {
          await reader.close();
        }
        await cluster.nodes[victim]!.start();
        await sleep(2_000);
      } finally {
        running = false;
        await load;
      }
      // The client is on the nodes that stayed up: its events are stored throughout.
      expect(notStored).toEqual([]);

      const failed = outcomes.filter((o) => o.code !== undefined);
      const after = outcomes.filter((o) => o.at > killedAt + 1_000);
      expect(outcomes.length).toBeGreaterThan(200);
      // At most the calls caught in the loss fail, each within its deadline (3 s, plus the client's grace).
      expect(failed.length, JSON.stringify(failed.slice(0, 5))).toBeLessThanOrEqual(Math.max(8, outcomes.length * 0.02));
      for (const f of failed) {
        expect(f.code).toMatch(/^(BACKEND_UNAVAILABLE|DEADLINE_EXCEEDED|CANCELLED)$/);
        expect(f.ms).toBeLessThan(3_000 + 1_500);
      }
      // From a second after the loss on, calls succeed.
      expect(after.filter((o) => o.code === undefined).length).toBeGreaterThan(100);
      expect(after.filter((o) => o.code !== undefined)).toEqual([]);

      // Every chat event stored during the loss reaches the files.
      await waitFor(
        "every stored chat event in the JSONL files",
        () => {
          const written = new Set((readChatLogs(dir).get("cluster-loss") ?? []).map((e) => e.id));
          return stored.every((id) => written.has(id));
        },
        20_000,
      );

      // The node is back in the cluster: the chat stream has its three replicas current again.
      await waitFor(
        "the node to rejoin and catch up",
        async () => {
          const info = await (await watcher.jetstreamManager()).streams.info(CHAT_STREAM);
          const replicas = info.cluster?.replicas ?? [];
          return replicas.length === 2 && replicas.every((r) => r.current && !r.offline);
        },
        30_000,
      );
    },
    90_000,
  );
});
