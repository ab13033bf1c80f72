import { mkdir } from "node:fs/promises";
import type { ChatLogConfig } from "@toolbus/config";
import { CHAT_FLOORS_BUCKET, CHAT_LEASES_BUCKET, CHAT_PARTITIONS, CHAT_STREAM, chatConsumerName } from "@toolbus/protocol";
import { Leases, TOOLBUS_VERSION, addService, ensureChatStreams, stopOnce, type Worker, type WorkerDeps } from "@toolbus/runtime";
import { ConversationFiles } from "./files.js";
import { PartitionWriter } from "./partition.js";

export interface ChatLogWriterOptions {
  chatLog: ChatLogConfig;
}

export interface ChatLogWriterWorker extends Worker {
  /** The partitions this replica writes now. */
  partitions(): number[];
  /** Events written, duplicates dropped, dead letters, since start. */
  counts(): { written: number; duplicates: number; dead: number; batches: number };
}

const partitionKey = (p: number): string => `p${p}`;

/**
 * The chat-log writer: appends every event of stream TOOLBUS_CHAT to `<dir>/<conversation>.jsonl`,
 * fsynced before it is acknowledged. Replicas share the partitions through leases in KV
 * (`toolbus_chat_leases`), so each partition, and so each conversation, has one writer at a time and
 * its lines are in the order they were published. Each replica registers with the services API as
 * `toolbus-chat-log-writer`; it is not ready while it cannot write (the reason says why).
 */
export async function startChatLogWriter(deps: WorkerDeps, options: ChatLogWriterOptions): Promise<ChatLogWriterWorker> {
  const { nc, metrics } = deps;
  const settings = options.chatLog;
  const log = deps.logger.child({ worker: "chat-log-writer", workerId: deps.workerId });
  const jsm = await ensureChatStreams(nc, settings, log, deps.streamReplicas ?? 1);
  const streamCreated = (await jsm.streams.info(CHAT_STREAM)).created;
  const js = nc.jetstream();
  const floors = await js.views.kv(CHAT_FLOORS_BUCKET, { history: 1, replicas: deps.streamReplicas ?? 1 }).catch((err: unknown) => {
    log.warn(
      { err: (err as Error).message },
      `no KV bucket ${CHAT_FLOORS_BUCKET}; a writer killed while taking a partition over may make the next one read it again from the start`,
    );
    return undefined;
  });
  await mkdir(settings.dir, { recursive: true }).catch((err: unknown) =>
    log.error({ dir: settings.dir, err: (err as Error).message }, "cannot create the chat-log directory"),
  );
  const files = new ConversationFiles(settings.dir, settings.batch.maxEvents * 2, settings.lockStaleMs, log);
  const writers = new Map<number, PartitionWriter>();
  const counts = { written: 0, duplicates: 0, dead: 0, batches: 0 };
  /** Partitions whose writes fail, with the error: the worker is not ready while any does. */
  const failing = new Map<number, string>();
  let lastProblem: string | undefined;

  const eventsOf = (partition: number) => ({
    written: (c: { events: number; duplicates: number; dead: number; fsyncMs: number; redelivered: number }) => {
      counts.written += c.events;
      counts.duplicates += c.duplicates;
      counts.dead += c.dead;
      counts.batches += 1;
      metrics.chatEventsWritten.inc(c.events);
      metrics.chatBatches.inc();
      if (c.duplicates > 0) metrics.chatDuplicatesDropped.inc(c.duplicates);
      if (c.redelivered > 0) metrics.chatRedeliveries.inc(c.redelivered);
      if (c.events > 0) metrics.chatFsyncSeconds.observe(c.fsyncMs / 1000);
    },
    failing: (err: Error | null) => {
      if (err === null) {
        failing.delete(partition);
        if (failing.size === 0 && lastProblem !== undefined) {
          log.info({ dir: settings.dir }, "chat-log writes work again");
          lastProblem = undefined;
        }
        return;
      }
      const code = (err as NodeJS.ErrnoException).code ?? err.name;
      metrics.chatWriteErrors.inc({ code });
      const problem = `${code}: ${err.message}`;
      failing.set(partition, problem);
      // Once per change of state, not once per retry.
      if (problem !== lastProblem) {
        log.error({ dir: settings.dir, code, err: err.message }, "cannot write the chat log; events are kept in the stream and retried");
        lastProblem = problem;
      }
    },
    dead: (reason: string) => metrics.chatDeadLetters.inc({ reason }),
  });

  let stopping = false;
  const onLease = async (name: string, owned: boolean): Promise<void> => {
    const partition = Number(name.slice(1));
    if (owned && stopping) return;
    if (owned && !writers.has(partition)) {
      const writer = new PartitionWriter(partition, js, jsm, files, settings, eventsOf(partition), floors, streamCreated);
      writers.set(partition, writer);
      void startReading(partition, writer);
    } else if (!owned) {
      const writer = writers.get(partition);
      writers.delete(partition);
      failing.delete(partition);
      // Another writer may write its files now: what we remember of them is no longer sure.
      files.forget();
      await writer?.stop();
    }
  };
  /** Start a partition's reader, retrying (JetStream may be just back) while the partition is ours; not ready meanwhile. */
  async function startReading(partition: number, writer: PartitionWriter): Promise<void> {
    for (let wait = 100; !writer.stopped; wait = Math.min(5_000, wait * 2)) {
      try {
        await writer.start();
        notStarted.delete(partition);
        return;
      } catch (err) {
        notStarted.set(partition, `partition ${partition} is not being read: ${(err as Error).message}`);
        log.warn({ partition, err: (err as Error).message, retryInMs: wait }, "could not start reading a chat partition; retrying");
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    notStarted.delete(partition);
  }
  const notStarted = new Map<number, string>();
  const names = Array.from({ length: CHAT_PARTITIONS }, (_, p) => partitionKey(p));
  const leases = new Leases(nc, CHAT_LEASES_BUCKET, names, deps.workerId, log, onLease, "partition", true, false, deps.streamReplicas ?? 1);
  // In the background: a replica waits a lease round for its peers before taking its share, and the
  // process's other workers need not wait for that.
  const leasesStarted = leases.start().catch((err: unknown) => log.error({ err: (err as Error).message }, "could not take chat partitions"));

  const service = await addService(nc, {
    name: "toolbus-chat-log-writer",
    version: TOOLBUS_VERSION,
    description: "toolbus chat-log writer: JetStream TOOLBUS_CHAT to JSONL files",
    workerId: deps.workerId,
    metadata: { dir: settings.dir },
  });
  // NATS came back: every partition reads again from its ack floor (see PartitionWriter.restart).
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type !== "reconnect") continue;
      // Our leases may have expired meanwhile and been taken: stop every partition, and read again
      // (from its ack floor) only those the next lease round finds still ours.
      log.info("NATS reconnected; taking the partitions again");
      void leases.reset();
    }
  })();
  const pendingTimer = setInterval(() => {
    void Promise.all(
      [...writers.keys()].map((p) =>
        jsm.consumers
          .info(CHAT_STREAM, chatConsumerName(p))
          .then((i) => i.num_pending + i.num_ack_pending)
          .catch(() => 0),
      ),
    ).then((pending) => metrics.chatPending.set(pending.reduce((a, b) => a + b, 0)));
  }, 5_000);
  pendingTimer.unref();
  log.info({ dir: settings.dir }, "chat-log writer started; taking its share of the partitions");

  return {
    name: "chat-log-writer",
    partitions: () => [...writers.keys()].sort((a, b) => a - b),
    counts: () => ({ ...counts }),
    notReady: () => [
      ...[...new Set(failing.values())].map((problem) => `chat-log writer cannot write ${settings.dir}: ${problem}`),
      ...[...notStarted.values()].map((problem) => `chat-log writer: ${problem}`),
    ],
    ...stopOnce(async () => {
      stopping = true;
      clearInterval(pendingTimer);
      await service.stop();
      await leasesStarted;
      // Finish the batches being written, then hand the partitions over at once.
      await Promise.allSettled([...writers.values()].map((w) => w.stop()));
      writers.clear();
      await leases.stop();
      log.info("chat-log writer stopped");
    }),
  };
}
