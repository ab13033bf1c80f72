import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startChatLogWriter, type ChatLogWriterWorker } from "@toolbus/chat-log-writer";
import { ToolbusClient } from "@toolbus/client";
import { CHAT_DEAD_LETTER_SUBJECT, ChatDeadLetterSchema, chatFileName, chatPartitionOf, chatSubject, type ChatDeadLetter } from "@toolbus/protocol";
import { connectNats, createLogger, createMetrics, newWorkerId } from "@toolbus/runtime";
import { newEventId } from "@toolbus/client";
import { readChatLogs } from "../helpers/chat.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { removeTempDirs, tempDir, testConfig, waitFor } from "../helpers/toolbus.js";

const lineCount = (dir: string): number => [...readChatLogs(dir).values()].reduce((n, lines) => n + lines.length, 0);

describe("chat-log writer", () => {
  let nats: TestNats;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    // A server that takes 8 MB messages, so a 2 MB event reaches the writer (to be refused there).
    const conf = join(tempDir("toolbus-chat-nats-"), "nats.conf");
    writeFileSync(conf, "max_payload: 8MB\n");
    nats = await startNats({ args: ["-c", conf] });
  });
  // Each test's writers write to its own directory: none may outlive it.
  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
    // The next test writes to another directory: nothing of this one's may be left to write there.
    const client = await ToolbusClient.connect({ servers: nats.url });
    await (await client.nc.jetstreamManager()).streams.purge("TOOLBUS_CHAT").catch(() => undefined);
    await client.close();
  });
  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  /** A writer replica with its own NATS connection (as in its own pod). */
  async function writer(dir: string, extra: Record<string, unknown> = {}): Promise<ChatLogWriterWorker> {
    const config = testConfig(nats.url, { chatLog: { dir, lockStale: "2s", ...extra } });
    const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
    const nc = await connectNats(config.nats, { name: "chat-log-writer", logger });
    const worker = await startChatLogWriter({ nc, logger, metrics: createMetrics(), workerId: newWorkerId("chat-log-writer") }, { chatLog: config.chatLog });
    stops.push(async () => {
      await worker.stop();
      await nc.drain();
    });
    return worker;
  }

  it("3 writers on one directory, 10,000 events from 4 publishers over 20 conversations: whole lines, each id once, in order", async () => {
    const dir = tempDir("toolbus-chat-");
    const writers = [await writer(dir), await writer(dir), await writer(dir)];
    // The 16 partitions are shared: every replica writes some, and each partition has one writer.
    await waitFor(
      "every writer to own partitions, all 16 owned",
      () => writers.every((w) => w.partitions().length > 0) && writers.reduce((n, w) => n + w.partitions().length, 0) === 16,
      15_000,
    );

    const publishers = await Promise.all(Array.from({ length: 4 }, () => ToolbusClient.connect({ servers: nats.url })));
    const published = new Map<string, string[]>();
    try {
      // Each publisher owns 5 conversations and sends each one's events in order, the five side by side.
      await Promise.all(
        publishers.flatMap((client, p) =>
          Array.from({ length: 5 }, async (_, c) => {
            const conversationId = `conv-${p}-${c}${c % 2 === 0 ? "-Upper" : ""}`;
            const ids: string[] = [];
            published.set(conversationId, ids);
            for (let i = 0; i < 500; i++) {
              const { id } = await client.publishChatEvent({
                conversationId,
                type: i % 2 === 0 ? "user_message" : "assistant_message",
                payload: { i, text: `message ${i}` },
              });
              ids.push(id);
            }
          }),
        ),
      );
    } finally {
      await Promise.all(publishers.map((c) => c.close()));
    }
    await waitFor("10,000 lines", () => lineCount(dir) >= 10_000, 30_000);
    const logs = readChatLogs(dir);
    expect(logs.size).toBe(20);
    for (const [conversation, ids] of published) {
      const lines = logs.get(conversation)!;
      expect(lines.map((l) => l.id)).toEqual(ids);
      for (const line of lines) {
        expect(line.conversationId).toBe(conversation);
        expect(line.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      }
    }
    // Ids sort by time: within a conversation, file order is id order.
    for (const lines of logs.values()) expect(lines.map((l) => l.id)).toEqual([...lines.map((l) => l.id as string)].sort());
    expect(writers.reduce((n, w) => n + w.counts().written, 0)).toBe(10_000);
    expect(writers.filter((w) => w.counts().written > 0).length).toBeGreaterThanOrEqual(2);
  });

  it("poison (garbage, {}, 2 MB, a conversation id that is a path) goes to the dead-letter subject; every valid event is written", async () => {
    const dir = tempDir("toolbus-chat-");
    await writer(dir);
    const client = await ToolbusClient.connect({ servers: nats.url });
    const dead: ChatDeadLetter[] = [];
    const sub = client.nc.subscribe(CHAT_DEAD_LETTER_SUBJECT, { callback: (_e, m) => dead.push(ChatDeadLetterSchema.parse(m.json())) });
    try {
      const js = client.nc.jetstream();
      const conversationId = "poisoned";
      const subject = chatSubject(conversationId);
      const valid: string[] = [];
      const send = async (i: number) => valid.push((await client.publishChatEvent({ conversationId, type: "user_message", payload: { i } })).id);
      await send(0);
      await js.publish(subject, new TextEncoder().encode("\u0000garbage{"));
      await send(1);
      await js.publish(subject, new TextEncoder().encode("{}"));
      await send(2);
      await js.publish(subject, new Uint8Array(2 * 1024 * 1024).fill(0x61));
      await send(3);
      const traversal = { id: "x1", conversationId: "../../etc", type: "user_message", timestamp: new Date().toISOString(), payload: {} };
      await js.publish(subject, new TextEncoder().encode(JSON.stringify(traversal)));
      const elsewhere = { id: "x2", conversationId: "someone-else", type: "user_message", timestamp: new Date().toISOString(), payload: {} };
      await js.publish(subject, new TextEncoder().encode(JSON.stringify(elsewhere)));
      const localTime = { id: "x3", conversationId, type: "user_message", timestamp: "2026-11-22T10:00:00+01:00", payload: {} };
      await js.publish(subject, new TextEncoder().encode(JSON.stringify(localTime)));
      await send(4);

      await waitFor("the valid events and the dead letters", () => (readChatLogs(dir).get(conversationId)?.length ?? 0) === 5 && dead.length === 6, 10_000);
      expect(
        readChatLogs(dir)
          .get(conversationId)!
          .map((l) => l.id),
      ).toEqual(valid);
      expect(dead.map((d) => d.reason)).toEqual(["not_json", "invalid_event", "too_large", "invalid_event", "wrong_subject", "invalid_event"]);
      expect(dead[3]!.message).toMatch(/conversationId/);
      expect(dead[5]!.message).toMatch(/timestamp: timestamps are UTC ISO-8601 ending in Z/);
      expect(dead[2]!.size).toBe(2 * 1024 * 1024);
      expect(readdirSync(dir).filter((f) => f.endsWith(".jsonl"))).toEqual([chatFileName(conversationId)]);
    } finally {
      sub.unsubscribe();
      await client.close();
    }
  });

  it("disk full, then read-only: nothing acknowledged that is not on disk, a clear reason, whole lines; it resumes by itself", async () => {
    const dir = tempDir("toolbus-chat-full-");
    // A 128 KiB tmpfs of our own (root): full after a hundred or so 1 KiB events.
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=128k", "tmpfs", dir]);
    try {
      const w = await writer(dir, { batch: { maxEvents: 50, maxWait: "5ms" } });
      const client = await ToolbusClient.connect({ servers: nats.url });
      const ids: string[] = [];
      const publish = async (n: number) => {
        for (let i = 0; i < n; i++)
          ids.push((await client.publishChatEvent({ conversationId: "full", type: "user_message", payload: { text: "x".repeat(1000) } })).id);
      };
      try {
        await publish(300);
        await waitFor("the writer to report the full disk", () => w.notReady().some((r) => /ENOSPC/.test(r)), 10_000);
        expect(w.notReady()[0]).toMatch(new RegExp(`chat-log writer cannot write ${dir}: ENOSPC`));
        const before = readChatLogs(dir).get("full") ?? [];
        expect(before.length).toBeLessThan(300);
        expect(before.map((l) => l.id)).toEqual(ids.slice(0, before.length));
        // Still not acknowledged: the stream holds them.
        const info = await (await client.nc.jetstreamManager()).consumers.info("TOOLBUS_CHAT", `chat-log-writer-${chatPartitionOf("full")}`);
        expect(info.num_ack_pending + info.num_pending).toBeGreaterThan(0);

        // Space again: everything is written, once, in order.
        execFileSync("mount", ["-o", "remount,size=4m", dir]);
        await waitFor("the writer to catch up", () => (readChatLogs(dir).get("full")?.length ?? 0) === 300, 15_000);
        expect(
          readChatLogs(dir)
            .get("full")!
            .map((l) => l.id),
        ).toEqual(ids);
        await waitFor("ready again", () => w.notReady().length === 0, 5_000);

        // Read-only: the same, with EROFS.
        execFileSync("mount", ["-o", "remount,ro", dir]);
        await publish(20);
        await waitFor("the writer to report the read-only directory", () => w.notReady().some((r) => /EROFS/.test(r)), 10_000);
        execFileSync("mount", ["-o", "remount,rw", dir]);
        await waitFor("the writer to catch up", () => (readChatLogs(dir).get("full")?.length ?? 0) === 320, 15_000);
        expect(
          readChatLogs(dir)
            .get("full")!
            .map((l) => l.id),
        ).toEqual(ids);
        expect(w.notReady()).toEqual([]);
      } finally {
        await client.close();
      }
    } finally {
      for (const stop of stops.splice(0).reverse()) await stop();
      execFileSync("umount", [dir]);
    }
  });

  it("a directory removed under it is made again; nothing is lost", async () => {
    const dir = join(tempDir("toolbus-chat-gone-"), "logs");
    await writer(dir);
    const client = await ToolbusClient.connect({ servers: nats.url });
    try {
      const first = await client.publishChatEvent({ conversationId: "gone", type: "user_message", payload: {} });
      await waitFor("the first event", () => (readChatLogs(dir).get("gone")?.length ?? 0) === 1, 10_000);
      rmSync(dir, { recursive: true, force: true });
      const second = await client.publishChatEvent({ conversationId: "gone", type: "user_message", payload: {} });
      await waitFor("the second event, in a new directory", () => existsSync(dir) && (readChatLogs(dir).get("gone")?.length ?? 0) === 1, 10_000);
      expect(
        readChatLogs(dir)
          .get("gone")!
          .map((l) => l.id),
      ).toEqual([second.id]);
      expect(first.id < second.id).toBe(true);
    } finally {
      await client.close();
    }
  });

  it("NATS restarted while events are written: every acknowledged event is in its file once, in order", async () => {
    const dir = tempDir("toolbus-chat-restart-");
    await writer(dir, { batch: { maxEvents: 100, maxWait: "5ms" } });
    const client = await ToolbusClient.connect({ servers: nats.url });
    const acked = new Map<string, string[]>();
    let publishing = true;
    try {
      const lanes = Array.from({ length: 4 }, async (_, lane) => {
        const conversationId = `restart-${lane}`;
        const ids: string[] = [];
        acked.set(conversationId, ids);
        while (publishing) {
          // The same id until it is stored: a publish whose ack was lost is stored once (de-duplication).
          const id = newEventId();
          for (;;) {
            try {
              await client.publishChatEvent({ id, conversationId, type: "user_message", payload: { n: ids.length } }, { timeoutMs: 1_000 });
              break;
            } catch {
              await new Promise((r) => setTimeout(r, 100));
            }
          }
          ids.push(id);
        }
      });
      await new Promise((r) => setTimeout(r, 500));
      await nats.stop();
      await new Promise((r) => setTimeout(r, 1_000));
      await nats.start();
      await new Promise((r) => setTimeout(r, 1_500));
      publishing = false;
      await Promise.all(lanes);
      await waitFor("every acknowledged event on disk", () => [...acked].every(([c, ids]) => (readChatLogs(dir).get(c)?.length ?? 0) >= ids.length), 20_000);
      const logs = readChatLogs(dir);
      for (const [conversation, ids] of acked) expect(logs.get(conversation)!.map((l) => l.id)).toEqual(ids);
    } finally {
      await client.close();
    }
  });
});
