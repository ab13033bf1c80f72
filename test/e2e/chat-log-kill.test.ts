import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient } from "@toolbus/client";
import { readChatLogs } from "../helpers/chat.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { isAlive, removeTempDirs, runToolbus, tempDir, waitFor, writeConfig, type ToolbusProcess } from "../helpers/toolbus.js";

/** Every id in every conversation file of `dir`, in file order, by conversation; every line must parse. */
function idsOnDisk(dir: string): Map<string, string[]> {
  return new Map([...readChatLogs(dir)].map(([conversation, events]) => [conversation, events.map((e) => e.id)]));
}

describe("chat-log writers killed (SIGKILL) at random moments", () => {
  let nats: TestNats;
  let client: ToolbusClient;
  const writers = new Set<ToolbusProcess>();

  beforeAll(async () => {
    nats = await startNats();
    client = await ToolbusClient.connect({ servers: nats.url });
  });
  afterAll(async () => {
    for (const w of writers) w.kill("SIGKILL");
    await Promise.all([...writers].map((w) => w.exited));
    await client?.close();
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  it("20 kills mid-batch: every acknowledged event is in its file exactly once, in the order published", async () => {
    const dir = tempDir("toolbus-chat-kill-");
    const config = writeConfig({ admin: { port: -1 }, chatLog: { dir, lockStale: "2s", batch: { maxEvents: 200, maxWait: "5ms" } } });
    const start = (): ToolbusProcess => {
      const w = runToolbus(["--config", config, "--nats", nats.url, "--log-level", "warn", "worker", "chat-log-writer"]);
      writers.add(w);
      return w;
    };
    const live = [start(), start()];
    // The first writer creates the stream; publishing starts once it is there.
    await waitFor("the chat stream", async () => (await client.nc.jetstreamManager()).streams.info("TOOLBUS_CHAT").then(() => true), 20_000);

    const acked = new Map<string, string[]>();
    let publishing = true;
    const lanes = Array.from({ length: 8 }, async (_, lane) => {
      const conversationId = `kill-${lane}`;
      const ids: string[] = [];
      acked.set(conversationId, ids);
      for (let i = 0; publishing; i++) {
        const { id } = await client.publishChatEvent({ conversationId, type: "user_message", payload: { i, text: "x".repeat(100) } });
        ids.push(id);
      }
    });

    for (let run = 0; run < 20; run++) {
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
      const victim = live.splice(Math.floor(Math.random() * live.length), 1)[0]!;
      victim.kill("SIGKILL");
      expect(await victim.exited).toBe("SIGKILL");
      writers.delete(victim);
      live.push(start());
    }
    publishing = false;
    await Promise.all(lanes);
    const total = [...acked.values()].reduce((n, ids) => n + ids.length, 0);
    expect(total).toBeGreaterThan(1_000);

    // Leases of killed writers expire and stale file locks are taken over: then everything is written.
    await waitFor(
      "every acknowledged event on disk",
      () => {
        const disk = idsOnDisk(dir);
        return [...acked].every(([c, ids]) => (disk.get(c)?.length ?? 0) >= ids.length);
      },
      60_000,
    );
    const disk = idsOnDisk(dir);
    for (const [conversation, ids] of acked) {
      // 0 lost, 0 duplicated, in publish order.
      expect(disk.get(conversation), conversation).toEqual(ids);
    }
    for (const w of live) expect(isAlive(w.child.pid!)).toBe(true);
  }, 180_000);
});
