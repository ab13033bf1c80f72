import { AckPolicy, DeliverPolicy, nanos, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type KV } from "nats";
import type { ChatLogConfig } from "@toolbus/config";
import {
  CHAT_DEAD_LETTER_SUBJECT,
  CHAT_STREAM,
  ChatEventSchema,
  chatConsumerName,
  chatPartitionOf,
  chatPartitionSubjects,
  encodeJson,
  type ChatDeadLetter,
} from "@toolbus/protocol";
import type { ConversationFiles, Line } from "./files.js";

/** How long the server waits for our ack before it delivers an event again (we send `working` while a write is retried). */
const ACK_WAIT_MS = 30_000;
/** Retries of a batch that could not be written: quickly at first, then every few seconds until the disk is fixed. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;
/** How much of a dead event is kept with its reason. */
const DEAD_DATA_BYTES = 4096;

export interface PartitionEvents {
  /** A batch was written (counts), or could not be (the error; null once writing works again). */
  written(counts: { events: number; duplicates: number; dead: number; fsyncMs: number; redelivered: number }): void;
  failing(err: Error | null): void;
  dead(reason: ChatDeadLetter["reason"]): void;
}

type Decided = { ok: true; msg: JsMsg; conversationId: string; line: Line } | { ok: false; msg: JsMsg; dead: ChatDeadLetter };

/**
 * One partition's events, written by this writer while it holds the partition's lease: a durable pull
 * consumer read in stream order, batched (up to `maxEvents`, or what arrived within `maxWait`), written
 * per conversation file, fsynced, and only then acknowledged. A batch that cannot be written (disk
 * full, no permission, directory gone) is kept and retried, in order, until it can: nothing behind it
 * is written first, and nothing is acknowledged that is not on disk. An event no writer can write goes
 * to the dead-letter subject with the reason, and is acknowledged so it never blocks the others.
 */
export class PartitionWriter {
  #messages: ConsumerMessages | undefined;
  #buffer: JsMsg[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #stopped = false;
  /**
   * The highest stream sequence of this partition known to be in the files (kept in KV after each
   * batch): an event delivered again at or below it was written by us or the reader before us, however
   * far back, and is only acknowledged. The files' last lines cover the batch written last.
   */
  #writtenSeq = 0;
  /** Sequences in the buffer or the batch being written: an event delivered again meanwhile is not held twice. */
  readonly #held = new Set<number>();
  /** start, restart and stop run one after another, so a consumer is never left reading after a stop. */
  #lifecycle: Promise<void> = Promise.resolve();

  constructor(
    readonly partition: number,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly files: ConversationFiles,
    private readonly settings: ChatLogConfig,
    private readonly events: PartitionEvents,
    /**
     * Each partition's ack floor, kept before its consumer is made afresh: a writer killed between the
     * consumer's delete and its new add must not leave the next one to start from the stream's beginning.
     */
    private readonly floors: KV | undefined,
    /** When the stream was created: a floor kept for an older stream of the same name (deleted, made again) is not used. */
    private readonly streamCreated: string,
  ) {}

  /** Whether this reader was stopped (its partition is no longer ours). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Start reading, from the first event not acknowledged. The consumer is made afresh from its ack
   * floor: events delivered to a previous reader that died (or to us before NATS went away) would
   * otherwise come back only after the ack wait, behind later ones, and be written out of order.
   * Those of them already written are the files' last lines, which `ConversationFiles` recognises.
   */
  start(): Promise<void> {
    return this.#serially(() => this.#start());
  }

  #serially(step: () => Promise<void>): Promise<void> {
    const next = this.#lifecycle.then(step);
    this.#lifecycle = next.catch(() => undefined);
    return next;
  }

  async #start(): Promise<void> {
    const name = chatConsumerName(this.partition);
    const floorKey = `p${this.partition}`;
    let floor = await this.#savedFloor(floorKey);
    this.#writtenSeq = await this.#savedFloor(`w${this.partition}`);
    try {
      const info = await this.jsm.consumers.info(CHAT_STREAM, name);
      floor = Math.max(floor, info.ack_floor.stream_seq);
      await this.floors?.put(floorKey, JSON.stringify({ stream: this.streamCreated, floor }));
      await this.jsm.consumers.delete(CHAT_STREAM, name);
    } catch (err) {
      if (!/consumer not found/i.test((err as Error).message)) throw err;
    }
    const startSeq = floor + 1;
    await this.jsm.consumers.add(CHAT_STREAM, {
      durable_name: name,
      filter_subject: chatPartitionSubjects(this.partition),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: startSeq,
      ack_wait: nanos(ACK_WAIT_MS),
      // Events held unacknowledged: two batches, so the next one fills while one is written.
      max_ack_pending: this.settings.batch.maxEvents * 2,
    });
    if (this.#stopped) return;
    const consumer = await this.js.consumers.get(CHAT_STREAM, name);
    const messages = await consumer.consume({ max_messages: this.settings.batch.maxEvents * 2, callback: (msg) => this.#arrived(msg) });
    // Stopped while we were starting: this reader must not outlive the stop.
    if (this.#stopped) return void (await messages.close().catch(() => undefined));
    this.#messages = messages;
  }

  async #savedFloor(key: string): Promise<number> {
    try {
      const saved = JSON.parse((await this.floors?.get(key))?.string() || "{}") as { stream?: unknown; floor?: unknown };
      return saved.stream === this.streamCreated && typeof saved.floor === "number" ? saved.floor : 0;
    } catch {
      return 0;
    }
  }

  /**
   * Read again from the ack floor (after NATS came back: what was delivered meanwhile was lost on the
   * way, and acknowledgements sent meanwhile may be too). The batch being written is finished first.
   */
  restart(): Promise<void> {
    return this.#serially(async () => {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      await this.#messages?.close().catch(() => undefined);
      this.#messages = undefined;
      await this.#flushing;
      // Delivered again from the floor: dropping them here loses nothing.
      for (const msg of this.#buffer.splice(0)) this.#held.delete(msg.seq);
      if (!this.#stopped) await this.#start();
    });
  }

  #arrived(msg: JsMsg): void {
    if (this.#stopped || this.#held.has(msg.seq)) return;
    this.#held.add(msg.seq);
    this.#buffer.push(msg);
    if (this.#flushing) return;
    if (this.#buffer.length >= this.settings.batch.maxEvents) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.settings.batch.maxWaitMs);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#flushing || this.#buffer.length === 0) return;
    const batch = this.#buffer.splice(0, this.settings.batch.maxEvents);
    this.#flushing = this.#writeUntilDone(batch).finally(() => {
      for (const msg of batch) this.#held.delete(msg.seq);
      this.#flushing = undefined;
      // What arrived meanwhile: at once if a batch is full, else after the usual wait.
      if (this.#buffer.length >= this.settings.batch.maxEvents) this.#flush();
      else if (this.#buffer.length > 0) this.#timer ??= setTimeout(() => this.#flush(), this.settings.batch.maxWaitMs);
    });
  }

  /** Write a batch, retrying (and keeping its events from being delivered again) until it is on disk or we stop. */
  async #writeUntilDone(batch: JsMsg[]): Promise<void> {
    let wait = RETRY_MIN_MS;
    let failed = false;
    for (;;) {
      try {
        await this.#write(batch);
        if (failed) this.events.failing(null);
        return;
      } catch (err) {
        failed = true;
        this.events.failing(err as Error);
        if (this.#stopped) return;
        for (const msg of batch) quietly(() => msg.working());
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(RETRY_MAX_MS, wait * 2);
        if (this.#stopped) return;
      }
    }
  }

  async #write(batch: JsMsg[]): Promise<void> {
    const already = batch.filter((msg) => msg.seq <= this.#writtenSeq);
    const decided = batch.filter((msg) => msg.seq > this.#writtenSeq).map((msg) => this.#decide(msg));
    // Dead letters first: published (and acknowledged by the stream) before their events are acknowledged.
    for (const d of decided) {
      if (d.ok) continue;
      // Its own id: a batch retried after a disk error does not send its dead letters twice.
      await this.js.publish(CHAT_DEAD_LETTER_SUBJECT, encodeJson(d.dead), { msgID: `dead-${d.msg.seq}` });
    }
    const byConversation = new Map<string, Line[]>();
    const seen = new Set<string>();
    let duplicates = 0;
    for (const d of decided) {
      if (!d.ok) continue;
      // The same event twice in one batch (published twice outside the de-duplication window).
      if (seen.has(d.line.id)) {
        duplicates += 1;
        continue;
      }
      seen.add(d.line.id);
      const lines = byConversation.get(d.conversationId);
      if (lines) lines.push(d.line);
      else byConversation.set(d.conversationId, [d.line]);
    }
    let written = 0;
    let fsyncMs = 0;
    const results = await Promise.all([...byConversation].map(([conversationId, lines]) => this.files.append(conversationId, lines)));
    for (const r of results) {
      written += r.written;
      duplicates += r.duplicates;
      fsyncMs = Math.max(fsyncMs, r.fsyncMs);
    }
    // A connection closing now loses these acks: the events come back, and are recognised in the files.
    const highest = Math.max(this.#writtenSeq, ...batch.map((m) => m.seq));
    if (highest > this.#writtenSeq) {
      this.#writtenSeq = highest;
      // Not awaited: lost, it only means the files' tails decide for this batch after a crash.
      void this.floors?.put(`w${this.partition}`, JSON.stringify({ stream: this.streamCreated, floor: highest })).catch(() => undefined);
    }
    for (const d of decided) quietly(() => d.msg.ack());
    for (const msg of already) quietly(() => msg.ack());
    duplicates += already.length;
    const dead = decided.filter((d) => !d.ok);
    for (const d of dead) this.events.dead(d.dead.reason);
    this.events.written({ events: written, duplicates, dead: dead.length, fsyncMs, redelivered: batch.filter((m) => m.redelivered).length });
  }

  /** A line to write, or why this event can never be written. */
  #decide(msg: JsMsg): Decided {
    const deadLetter = (reason: ChatDeadLetter["reason"], message: string): Decided => ({
      ok: false,
      msg,
      dead: {
        reason,
        message,
        subject: msg.subject,
        sequence: msg.seq,
        time: new Date().toISOString(),
        data: Buffer.from(msg.data.subarray(0, DEAD_DATA_BYTES)).toString("base64"),
        size: msg.data.length,
      },
    });
    if (msg.data.length > this.settings.maxEventBytes)
      return deadLetter("too_large", `the event is ${msg.data.length} bytes, above chatLog.maxEventBytes (${this.settings.maxEventBytes})`);
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(msg.data).toString("utf8"));
    } catch (err) {
      return deadLetter("not_json", `not JSON: ${(err as Error).message}`);
    }
    const parsed = ChatEventSchema.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; ");
      return deadLetter("invalid_event", `not a chat event: ${issues}`);
    }
    const event = parsed.data;
    // The subject names the conversation too: they must agree (and the partition must be this one).
    const token = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
    if (token !== event.conversationId || chatPartitionOf(event.conversationId) !== this.partition)
      return deadLetter("wrong_subject", `published on ${msg.subject}, but the event's conversation is ${event.conversationId}`);
    // The event as its producer wrote it (fields toolbus does not know included), on one line.
    return { ok: true, msg, conversationId: event.conversationId, line: { id: event.id, text: JSON.stringify(raw) } };
  }

  /** Stop reading; the batch being written is finished (or, failing, left to be delivered again). */
  stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    return this.#serially(async () => {
      await this.#messages?.close().catch(() => undefined);
      this.#messages = undefined;
      await this.#flushing;
      // Events read but not written go back to the stream: after ack_wait, or at once with a nak.
      for (const msg of this.#buffer.splice(0)) quietly(() => msg.nak());
      this.#held.clear();
    });
  }
}

/** An ack, nak or keep-alive on a closing connection throws; it is lost either way (the event comes back). */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // nothing to do
  }
}
