/**
 * The chat log's figures for `npm run bench`: how fast writers empty a stream of waiting events (one
 * writer, three writers), and the time from publish to fsynced in the file at a steady 1,000 events/s.
 * Writers run as `toolbus worker chat-log-writer` processes, as users run them.
 */
import { openSync, readSync, closeSync, existsSync, fstatSync } from "node:fs";
import { join } from "node:path";
import { ToolbusClient } from "@toolbus/client";
import { chatFileName } from "@toolbus/protocol";
import { startNats } from "../helpers/nats-server.js";
import { runToolbus, tempDir, waitFor, writeConfig, type ToolbusProcess } from "../helpers/toolbus.js";
import { quantile } from "./measure.js";

export interface ChatFigures {
  events: number;
  oneWriterEventsPerSec: number;
  threeWritersEventsPerSec: number;
  steadyRate: number;
  publishToDurableP50Ms: number;
  publishToDurableP99Ms: number;
}

const CONVERSATIONS = 20;

/** Publish `n` events over the conversations, 64 in flight; resolves with each event's id and publish time. */
async function publish(client: ToolbusClient, n: number, prefix: string): Promise<void> {
  let issued = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (issued < n) {
        const i = issued++;
        await client.publishChatEvent({ conversationId: `${prefix}-${i % CONVERSATIONS}`, type: "user_message", payload: { i, text: "hello ".repeat(20) } });
      }
    }),
  );
}

/** Lines in the conversations' files (counting newlines; the writer only writes whole lines). */
function lines(dir: string, prefix: string): number {
  let n = 0;
  const buf = Buffer.alloc(1 << 16);
  for (let c = 0; c < CONVERSATIONS; c++) {
    const path = join(dir, chatFileName(`${prefix}-${c}`));
    if (!existsSync(path)) continue;
    const fd = openSync(path, "r");
    try {
      let pos = 0;
      for (;;) {
        const read = readSync(fd, buf, 0, buf.length, pos);
        if (read === 0) break;
        for (let i = 0; i < read; i++) if (buf[i] === 0x0a) n++;
        pos += read;
      }
    } finally {
      closeSync(fd);
    }
  }
  return n;
}

export async function chatBench(events: number): Promise<ChatFigures> {
  await using nats = await startNats();
  const client = await ToolbusClient.connect({ servers: nats.url });
  const dir = tempDir("toolbus-bench-chat-");
  const config = writeConfig({ admin: { port: -1 }, chatLog: { dir } });
  const writers: ToolbusProcess[] = [];
  const startWriters = (n: number): void => {
    for (let i = 0; i < n; i++) writers.push(runToolbus(["--config", config, "--nats", nats.url, "--log-level", "warn", "worker", "chat-log-writer"]));
  };
  const stopWriters = async (): Promise<void> => {
    for (const w of writers) w.kill("SIGTERM");
    await Promise.all(writers.map((w) => w.exited));
    writers.length = 0;
  };
  try {
    // Drain rate: the events wait in the stream, then the writers start and write them all; timed from
    // the first line written (a process's start-up is not writing).
    const drain = async (n: number, prefix: string): Promise<number> => {
      await publish(client, events, prefix);
      startWriters(n);
      await waitFor("the first line", () => lines(dir, prefix) > 0, 60_000);
      const t0 = performance.now();
      const first = lines(dir, prefix);
      await waitFor(`${events} events written by ${n} writer(s)`, () => lines(dir, prefix) >= events, 120_000);
      const rate = Math.round((events - first) / ((performance.now() - t0) / 1000));
      await stopWriters();
      return rate;
    };
    // The first writer creates the stream; it is stopped once it writes (a writer stopped while it
    // starts leaves its leases to expire, which would slow the next one's start).
    startWriters(1);
    await waitFor("the chat stream", async () => (await client.nc.jetstreamManager()).streams.info("TOOLBUS_CHAT").then(() => true), 20_000);
    await client.publishChatEvent({ conversationId: "first", type: "user_message", payload: {} });
    await waitFor("the first writer to write", () => existsSync(join(dir, chatFileName("first"))), 20_000);
    await stopWriters();
    const oneWriter = await drain(1, "one");
    const threeWriters = await drain(3, "three");

    // Publish → fsynced at a steady rate: the files are polled every 2 ms for new lines (so the figure
    // is at most 2 ms late), while one writer runs.
    startWriters(1);
    // Only once the writer is writing: one event per conversation, written.
    for (let c = 0; c < CONVERSATIONS; c++) await client.publishChatEvent({ conversationId: `warm-${c}`, type: "user_message", payload: {} });
    await waitFor("the writer to be writing", () => lines(dir, "warm") >= CONVERSATIONS, 60_000);
    const rate = 1_000;
    const total = 3_000;
    const sentAt = new Map<number, number>();
    const seenAt = new Map<number, number>();
    const offsets = new Map<string, number>();
    const poll = setInterval(() => {
      for (let c = 0; c < CONVERSATIONS; c++) {
        const path = join(dir, chatFileName(`steady-${c}`));
        if (!existsSync(path)) continue;
        const fd = openSync(path, "r");
        try {
          const size = fstatSync(fd).size;
          const from = offsets.get(path) ?? 0;
          if (size <= from) continue;
          const buf = Buffer.alloc(size - from);
          readSync(fd, buf, 0, buf.length, from);
          const text = buf.toString("utf8");
          const end = text.lastIndexOf("\n") + 1;
          offsets.set(path, from + Buffer.byteLength(text.slice(0, end)));
          const now = performance.now();
          for (const line of text.slice(0, end).split("\n")) if (line) seenAt.set((JSON.parse(line) as { payload: { i: number } }).payload.i, now);
        } finally {
          closeSync(fd);
        }
      }
    }, 2);
    const t0 = performance.now();
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sentAt.set(i, performance.now());
      void client.publishChatEvent({ conversationId: `steady-${i % CONVERSATIONS}`, type: "user_message", payload: { i } });
    }
    await waitFor("every steady event written", () => seenAt.size >= total, 30_000);
    clearInterval(poll);
    const latencies = [...sentAt].map(([i, t]) => seenAt.get(i)! - t).sort((a, b) => a - b);
    const at = (q: number): number => Math.round(quantile(latencies, q) * 10) / 10;
    return {
      events,
      oneWriterEventsPerSec: oneWriter,
      threeWritersEventsPerSec: threeWriters,
      steadyRate: rate,
      publishToDurableP50Ms: at(0.5),
      publishToDurableP99Ms: at(0.99),
    };
  } finally {
    await stopWriters();
    await client.close();
  }
}
