import type { Msg, MsgHdrs, NatsConnection, Subscription } from "nats";
import {
  CacheHeartbeatSchema,
  ErrorCode,
  Headers,
  encodeJson,
  errorReply,
  monotonicNow,
  parseJsonOrUndefined,
  stampBudget,
  subjects,
  type CacheHeartbeat,
} from "@toolbus/protocol";
import type { Logger, Metrics } from "@toolbus/runtime";
import { discoverAll } from "./discover.js";

/** A cache replica is presumed gone after this many heartbeat intervals without news. */
const MISSED_BEATS = 3;
/** After a rescue the cache is bypassed at least this long, and until it is heard from again. */
const SUSPECT_MS = 1_000;

/** A call in the cache's hands: what the router needs to send it on itself if the cache drops it. */
interface Handed {
  readonly data: Uint8Array;
  readonly headers: MsgHdrs;
  readonly reply: string;
  readonly backend: string;
  readonly deadline: number;
  readonly handedAt: number;
}

/**
 * The router's side of the cache: which cache replicas are alive (heartbeats), handing them cacheable
 * calls, and a watchdog. The router does not wait for the cache: it hands a call over (the client's
 * reply subject in a header) and goes on. The cache acknowledges each call once it has answered it or
 * sent it on; a call not acknowledged within `handoffTimeoutMs` (the cache died with it, or stalls) is
 * sent to the backend's callers by the router itself, and the cache is bypassed until it is heard from
 * again. So a cache that is slow, down or failing costs a call at most that timeout, never the call: only
 * calls with at least twice that budget left are handed over. A cache that was only late may send the
 * call on too, so a rescued call can reach the backend twice; cacheable tools are read-only, so a
 * repeat does no harm.
 */
export class CacheHandoff {
  /** Cache replicas by worker id: when last heard from, and their heartbeat interval. */
  readonly #replicas = new Map<string, { lastSeen: number; intervalMs: number }>();
  /** Calls in the cache's hands by ticket, oldest first (a Map keeps insertion order). */
  readonly #handed = new Map<string, Handed>();
  #ticket = 0;
  #lastRescue = -Infinity;
  #lastHeard = -Infinity;
  #subscriptions: Subscription[] = [];
  #sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly routerId: string,
    private readonly handoffTimeoutMs: number,
  ) {}

  /** Listen to cache heartbeats and our acknowledgements, and start the watchdog. */
  listen(): void {
    this.#subscriptions = [
      this.nc.subscribe(subjects.cacheHeartbeat(), { callback: (_err, msg) => this.#heard(msg) }),
      this.nc.subscribe(subjects.cacheAck(this.routerId), { callback: (_err, msg) => this.#acked(msg) }),
    ];
    // The sweep runs after the I/O already waiting (setImmediate): after a stall of this process, the
    // acknowledgements queued in its socket are read before a call is taken for lost.
    this.#sweeper = setInterval(() => setImmediate(() => this.#sweep()), Math.max(5, Math.floor(this.handoffTimeoutMs / 5)));
    this.#sweeper.unref();
  }

  /** Ask running cache replicas to announce themselves now (a starting router then uses them at once). */
  discover(maxWaitMs: number): Promise<void> {
    return discoverAll(this.nc, subjects.cacheDiscovery(), maxWaitMs, (msg) => this.#heard(msg), this.log, "cache");
  }

  /**
   * Whether a call with `budgetMs` left may be handed to the cache: it has time for a rescue (at least
   * twice the hand-off timeout), a replica is alive, and none dropped a call since it was last heard from.
   */
  accepts(budgetMs: number, now = monotonicNow()): boolean {
    return budgetMs >= 2 * this.handoffTimeoutMs && this.available(now);
  }

  /** Whether a cache replica is alive and none dropped a call since it was last heard from. */
  available(now = monotonicNow()): boolean {
    if (this.#replicas.size === 0) return false;
    if (now - this.#lastRescue < SUSPECT_MS || this.#lastHeard <= this.#lastRescue) return false;
    for (const [id, r] of this.#replicas) {
      if (now - r.lastSeen > r.intervalMs * MISSED_BEATS) this.#replicas.delete(id);
    }
    return this.#replicas.size > 0;
  }

  /** Cacheable calls in the cache's hands now. */
  get handed(): number {
    return this.#handed.size;
  }

  /** Hand a call to the cache. `msg.headers` already carry the budget and the request id. */
  hand(msg: Msg, backend: string, deadline: number, key: string, now: number): void {
    const h = msg.headers!;
    const ticket = String(++this.#ticket);
    h.set(Headers.CacheKey, key);
    h.set(Headers.ReplyTo, msg.reply!);
    h.set(Headers.CacheTicket, ticket);
    // No reply subject: if no cache is subscribed any more, the server has nobody to tell "no responders".
    // Published before it is recorded: a publish that throws is answered by the router, never rescued.
    this.nc.publish(subjects.cacheLookup(), msg.data, { headers: h });
    this.#handed.set(ticket, { data: msg.data, headers: h, reply: msg.reply!, backend, deadline, handedAt: now });
  }

  #heard(msg: Msg): void {
    const beat = CacheHeartbeatSchema.safeParse(parseJsonOrUndefined(msg.data));
    if (!beat.success) return;
    const b: CacheHeartbeat = beat.data;
    if (b.status === "down") {
      this.#replicas.delete(b.workerId);
      return;
    }
    const now = monotonicNow();
    if (!this.#replicas.has(b.workerId)) this.log.info({ cache: b.workerId }, "cache joined");
    this.#replicas.set(b.workerId, { lastSeen: now, intervalMs: b.intervalMs });
    this.#lastHeard = now;
  }

  #acked(msg: Msg): void {
    for (const ticket of new TextDecoder().decode(msg.data).split(",")) this.#handed.delete(ticket);
  }

  /** Send on every call the cache has held too long, oldest first. */
  #sweep(): void {
    const now = monotonicNow();
    let rescued = 0;
    for (const [ticket, call] of this.#handed) {
      if (now - call.handedAt < this.handoffTimeoutMs) break;
      this.#handed.delete(ticket);
      rescued += 1;
      this.#rescue(call, now);
    }
    if (rescued === 0) return;
    this.#lastRescue = now;
    this.metrics.cacheHandoffs.inc({ outcome: "rescued" }, rescued);
    this.log.warn(
      { rescued, handoffTimeoutMs: this.handoffTimeoutMs },
      "the cache did not take calls in time; sent them to the backend and bypassing the cache",
    );
  }

  #rescue(call: Handed, now: number): void {
    try {
      if (call.deadline - now <= 1) {
        this.nc.publish(call.reply, encodeJson(errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed while the call was with the cache")));
        return;
      }
      const h = call.headers;
      h.delete(Headers.ReplyTo);
      h.delete(Headers.CacheTicket);
      h.set(Headers.TimeoutMs, stampBudget(call.deadline, now));
      this.nc.publish(subjects.backendCall(call.backend), call.data, { reply: call.reply, headers: h });
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, "could not send on a call the cache dropped");
    }
  }

  /** Stop listening; calls still in the cache's hands are sent on, so a stopping router loses none. */
  async stop(): Promise<void> {
    clearInterval(this.#sweeper);
    const now = monotonicNow();
    // Give the cache its usual time with the calls it has, then take back the rest.
    const waitUntil = now + this.handoffTimeoutMs;
    while (this.#handed.size > 0 && monotonicNow() < waitUntil && !this.nc.isClosed()) await new Promise((r) => setTimeout(r, 5));
    for (const call of this.#handed.values()) this.#rescue(call, monotonicNow());
    this.#handed.clear();
    await Promise.allSettled(this.#subscriptions.map((s) => s.drain()));
  }
}
