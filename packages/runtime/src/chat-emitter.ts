import { createInbox, headers as natsHeaders, type NatsConnection, type Subscription } from "nats";
import { chatSubject, decodeJson, encodeJson, newEventId, type ChatEvent } from "@toolbus/protocol";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/** When an event happened: its id (a UUIDv7, which sorts by time) and its UTC timestamp. */
export interface ChatStamp {
  readonly id: string;
  readonly timestamp: string;
}

/** Stamp an event now. */
export function stamp(): ChatStamp {
  return { id: newEventId(), timestamp: new Date().toISOString() };
}

/** Events waiting to be stored, across conversations: past this, new ones are dropped (and counted). */
const MAX_QUEUED = 10_000;
/** Attempts per event, 100 ms apart and doubling: about 3 s in all before it is dropped. */
const ATTEMPTS = 5;
const FIRST_RETRY_MS = 100;
const PUBLISH_TIMEOUT_MS = 2_000;
/**
 * Events are handed to JetStream every few ms, together: the work of logging then comes in short
 * bursts between calls rather than inside each one (a call's answer is never behind it).
 */
const FLUSH_EVERY_MS = 5;

/**
 * Publishes the chat events of tool calls (tool_call, tool_result, error) in the background: a call
 * never waits for its log, and never fails because the log is unavailable. Each conversation's events
 * are stored one after the other, in the order emitted; an event that cannot be stored after a few
 * attempts (the stream is missing, JetStream is away) is dropped, counted, and logged once per outage.
 */
export class ChatEmitter {
  /** Per conversation: the end of its chain of publishes. */
  readonly #tails = new Map<string, Promise<void>>();
  #queued = 0;
  #failing = false;
  #closing = false;
  #closed = false;
  /** Emitted since the last flush, in order. */
  #pending: ChatEvent[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #js: StorePublisher;

  constructor(
    nc: NatsConnection,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Added to every event's `meta` (who emitted it). */
    private readonly source: Record<string, unknown>,
  ) {
    this.#js = new StorePublisher(nc);
  }

  /** Events waiting to be stored. */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Queue an event. `at` is when it happened (its id and timestamp), when that was earlier than now: a
   * call's `tool_call` is stamped on arrival but emitted after the answer, so logging adds nothing to
   * the call's latency.
   */
  emit(conversationId: string, type: string, payload: unknown, at: ChatStamp = stamp()): void {
    if (this.#closed || this.#closing || this.#queued >= MAX_QUEUED) {
      this.metrics.chatEventsDropped.inc();
      return;
    }
    this.#queued += 1;
    this.#pending.push({ id: at.id, conversationId, type, timestamp: at.timestamp, payload, meta: this.source });
    this.#timer ??= setTimeout(() => this.#flush(), FLUSH_EVERY_MS);
  }

  /**
   * Publish what is queued now rather than at the next tick: an LLM caller logs the assistant's answer
   * before it replies, so the client's next message (maybe through another caller) comes after it.
   */
  flush(): void {
    clearTimeout(this.#timer);
    this.#flush();
  }

  /**
   * Publish what is queued now and wait (at most `timeoutMs`) until this conversation's events are
   * stored: an LLM caller logs the answer before it replies, so the client's next message, which
   * another caller may log, comes after it in the log.
   */
  async settled(conversationId: string, timeoutMs: number): Promise<void> {
    this.flush();
    const tail = this.#tails.get(conversationId);
    if (!tail) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([tail, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }

  #flush(): void {
    this.#timer = undefined;
    for (const event of this.#pending.splice(0)) this.#chain(event);
  }

  /** Store `event` after the events of its conversation emitted before it. */
  #chain(event: ChatEvent): void {
    const conversationId = event.conversationId;
    const previous = this.#tails.get(conversationId);
    // With nothing of its conversation in flight, the publish starts now, not a microtask later.
    const tail = (previous ? previous.then(() => this.#store(event)) : this.#store(event)).finally(() => (this.#queued -= 1));
    this.#tails.set(conversationId, tail);
    void tail.then(() => {
      if (this.#tails.get(conversationId) === tail) this.#tails.delete(conversationId);
    });
  }

  async #store(event: ChatEvent): Promise<void> {
    const data = encodeJson(event);
    let wait = FIRST_RETRY_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        // The event id is the de-duplication id: a retry of a publish that did land is stored once.
        await this.#js.publish(chatSubject(event.conversationId), data, { msgID: event.id, timeout: PUBLISH_TIMEOUT_MS });
        if (this.#failing) {
          this.#failing = false;
          this.log.info("chat events are stored again");
        }
        return;
      } catch (err) {
        if (attempt >= ATTEMPTS || this.#closed) {
          this.metrics.chatEventsDropped.inc();
          if (!this.#failing) {
            this.#failing = true;
            this.log.warn(
              { err: (err as Error).message, conversationId: event.conversationId },
              "chat events cannot be stored (is stream TOOLBUS_CHAT there?); dropping them",
            );
          }
          return;
        }
        await new Promise((r) => setTimeout(r, wait));
        wait *= 2;
      }
    }
  }

  /** Wait (at most `timeoutMs`) for the events emitted so far to be stored; then drop the rest. */
  async close(timeoutMs = 2_000): Promise<void> {
    // No new events from here on (they would be published after the ack inbox is gone).
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#flush();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.#tails.values()]), new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    this.#closed = true;
    this.#js.close();
  }
}

/**
 * JetStream publishes with their acks on one wildcard inbox of ours, a token each: what `js.publish`
 * does, without building a NatsError and a request object per event (a large share of logging's
 * CPU when every call is logged).
 */
class StorePublisher {
  readonly #prefix: string;
  #closed = false;
  readonly #pending = new Map<string, { resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  readonly #sub: Subscription;
  #sequence = 0;

  constructor(private readonly nc: NatsConnection) {
    // Under the connection's own inbox prefix, which NATS permissions may require.
    this.#prefix = `${createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix)}.`;
    this.#sub = nc.subscribe(`${this.#prefix}*`, {
      callback: (err, msg) => {
        // A subscription error (a permissions violation) comes with no message: every ack waiting is lost.
        if (err || typeof msg?.subject !== "string") {
          for (const [token, waiting] of this.#pending) {
            clearTimeout(waiting.timer);
            this.#pending.delete(token);
            waiting.reject(err ?? new Error("the ack inbox failed"));
          }
          return;
        }
        const waiting = this.#pending.get(msg.subject.slice(this.#prefix.length));
        if (!waiting) return;
        this.#pending.delete(msg.subject.slice(this.#prefix.length));
        clearTimeout(waiting.timer);
        // The server's "no responders": no stream listens on the subject.
        if (msg.data.length === 0 && msg.headers?.code === 503) return waiting.reject(new Error("no stream for the subject (503)"));
        let ack: { error?: { description?: string } } | undefined;
        try {
          ack = decodeJson(msg.data) as { error?: { description?: string } };
        } catch {
          return waiting.reject(new Error("the stream's ack is not JSON"));
        }
        if (ack?.error) waiting.reject(new Error(`the stream refused the event: ${ack.error.description ?? "unknown"}`));
        else waiting.resolve();
      },
    });
  }

  /** Store `data` on `subject` with `msgId` as its de-duplication id; resolves once the stream has it. */
  publish(subject: string, data: Uint8Array, options: { msgID: string; timeout: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#closed || this.nc.isClosed()) return reject(new Error(this.#closed ? "closed" : "the NATS connection is closed"));
      const token = (++this.#sequence).toString(36);
      const timer = setTimeout(() => {
        this.#pending.delete(token);
        reject(new Error(`no ack from the stream within ${options.timeout} ms`));
      }, options.timeout);
      this.#pending.set(token, { resolve, reject, timer });
      const h = natsHeaders();
      h.set("Nats-Msg-Id", options.msgID);
      try {
        this.nc.publish(subject, data, { reply: `${this.#prefix}${token}`, headers: h });
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(token);
        reject(err as Error);
      }
    });
  }

  close(): void {
    this.#closed = true;
    for (const { timer, reject } of this.#pending.values()) {
      clearTimeout(timer);
      reject(new Error("closed"));
    }
    this.#pending.clear();
    if (!this.nc.isClosed()) this.#sub.unsubscribe();
  }
}
