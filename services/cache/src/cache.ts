import type { Msg, MsgHdrs, Subscription } from "nats";
import type { ToolbusConfig } from "@toolbus/config";
import {
  BackendChangedSchema,
  CONVERSATION_ID_PATTERN,
  ChatEventType,
  CacheInvalidateRequestSchema,
  CacheInvalidatedSchema,
  CacheSetHeadSchema,
  ErrorCode,
  Headers,
  decodeRequest,
  encodeJson,
  errorReply,
  isBackendName,
  kvBuckets,
  monotonicNow,
  parseCacheKey,
  parseJsonOrUndefined,
  queueGroups,
  readBudget,
  stampBudget,
  subjects,
  type CacheHeartbeat,
  type CacheInvalidateOkReply,
  type CacheInvalidated,
  type CacheStatus,
  type ErrorReply,
} from "@toolbus/protocol";
import {
  ChatEmitter,
  InFlight,
  TOOLBUS_VERSION,
  addService,
  cacheKeyFor,
  maxPayloadOf,
  respondJson,
  stopOnce,
  type Worker,
  type WorkerDeps,
} from "@toolbus/runtime";
import { Acks } from "./acks.js";
import { MemoryTier, SharedTier, type Entry } from "./tiers.js";

/** The least budget a call must keep for the backend after a shared-tier lookup. */
const LOOKUP_MARGIN_MS = 5;
/** When a purge of the shared tier runs again (see purge). */
const REPURGE_AFTER_MS = 1_000;
/** Invalidation marks kept before old ones are pruned. */
const MAX_INVALIDATION_MARKS = 10_000;

/** What a lookup needs of a tool-call request. */
interface LookupRequest {
  backend: string;
  tool: string;
  arguments: Record<string, unknown>;
  conversationId?: string;
}

export interface CacheOptions {
  config: ToolbusConfig;
  heartbeatMs: number;
}

export interface CacheWorker extends Worker {
  /** Counters and sizes, as `toolbus status` shows them. */
  status(): CacheStatus;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The cache worker. Serves, in queue group `cache`:
 * - `toolbus.v1.cache.lookup`: calls the router judged cacheable. A hit is answered here, to the
 *   client (`meta.cached` names the tier); a miss goes on to the backend's caller with the budget left.
 *   Either way the router hears (Acks) that the call is no longer in our hands.
 * - `toolbus.v1.cache.set`: results the callers offer; stored in L1 and in the shared L2.
 * - `toolbus.v1.cache.invalidate`: requests to drop a backend's or a tool's entries.
 * And, as every replica: changes callers report (a backend's tools changed, its server restarted) and
 * invalidations, which drop entries from this replica's memory.
 */
export async function startCache(deps: WorkerDeps, options: CacheOptions): Promise<CacheWorker> {
  const { nc, metrics } = deps;
  const { config } = options;
  const settings = config.cache;
  const log = deps.logger.child({ worker: "cache", workerId: deps.workerId });
  const memory = new MemoryTier(settings);
  const shared = settings.shared.enabled ? await SharedTier.open(nc, { ...settings.shared, replicas: deps.streamReplicas ?? 1 }, log) : undefined;
  const acks = new Acks(nc);
  const chat = new ChatEmitter(nc, log, metrics, { worker: "cache", workerId: deps.workerId });
  const inFlight = new InFlight();
  const maxPayload = (): number => maxPayloadOf(nc);
  const counts = { l1: 0, l2: 0, misses: 0, stores: 0 };
  let evictionsCounted = 0;
  /** When entries of a backend (key `b`) or of a tool (`b\0tool`) were last invalidated, on our monotonic clock. */
  const invalidatedAt = new Map<string, number>();
  /** Second purges still to run (cleared on stop). */
  const repurges = new Set<NodeJS.Timeout>();

  const hitL1 = metrics.cacheLookups.labels("l1");
  const hitL2 = metrics.cacheLookups.labels("l2");
  const miss = metrics.cacheLookups.labels("miss");

  /**
   * Answer a hit: the stored result pasted into a reply, never parsed (unless the call names a
   * conversation: then it is logged there, as the caller would have).
   */
  function answerHit(replyTo: string, request: LookupRequest, h: MsgHdrs, entry: Entry, tier: "l1" | "l2", started: number): void {
    const meta = { backend: request.backend, endpoint: entry.endpoint, attempts: 0, cached: tier, durationMs: monotonicNow() - started };
    nc.publish(replyTo, encoder.encode(`{"ok":true,"result":${entry.result},"meta":${JSON.stringify(meta)}}`));
    const conversationId = request.conversationId;
    if (conversationId) {
      const requestId = h.get(Headers.RequestId);
      chat.emit(conversationId, ChatEventType.tool_call, { backend: request.backend, tool: request.tool, arguments: request.arguments, requestId });
      chat.emit(conversationId, ChatEventType.tool_result, {
        backend: request.backend,
        tool: request.tool,
        requestId,
        result: JSON.parse(entry.result) as unknown,
        meta,
      });
    }
  }

  function answerError(replyTo: string, reply: ErrorReply): void {
    nc.publish(replyTo, encodeJson(reply));
  }

  /**
   * A call handed over by a router. Whatever happens, the router is told once it is out of our hands;
   * the reply goes to the client's subject, which travels in a header (see Headers.ReplyTo).
   */
  function handleLookup(msg: Msg): void {
    const started = monotonicNow();
    const h = msg.headers;
    const replyTo = h?.get(Headers.ReplyTo);
    const ticket = h?.get(Headers.CacheTicket);
    const router = h?.get(Headers.ForwardedBy);
    const done = (): void => {
      if (ticket && router) acks.add(router, ticket);
    };
    if (!h || !replyTo) return done();
    const budget = readBudget(h.get(Headers.TimeoutMs), started, config.limits.maxBudgetMs);
    if (!budget.ok) {
      answerError(replyTo, errorReply(budget.code, budget.message));
      return done();
    }
    const request = lookupRequest(msg.data);
    if (!request) {
      answerError(replyTo, errorReply(ErrorCode.BAD_REQUEST, "a cache lookup must carry a tool-call request (backend, tool, arguments)"));
      return done();
    }
    const key = verifiedKey(request, h);
    if (key) {
      const entry = memory.get(key);
      if (entry) {
        counts.l1 += 1;
        hitL1.inc();
        answerHit(replyTo, request, h, entry, "l1", started);
        return done();
      }
    }
    if (!key || !shared) return forward(msg, h, replyTo, request.backend, budget.deadline, key, done);
    const waitMs = Math.min(settings.shared.timeoutMs, budget.deadline - monotonicNow() - LOOKUP_MARGIN_MS);
    inFlight.track(
      shared.get(key, waitMs).then((entry) => {
        // An invalidation while the read was out: what it found may be what was purged.
        if (entry && !isStale(request.backend, request.tool, started)) {
          counts.l2 += 1;
          hitL2.inc();
          memory.set(key, entry);
          answerHit(replyTo, request, h, entry, "l2", started);
          return done();
        }
        forward(msg, h, replyTo, request.backend, budget.deadline, key, done);
      }),
    );
  }

  /**
   * What a lookup needs of the body, without the full schema: the router has validated it, and a body
   * that does not match its key is never answered from the cache (its caller validates it fully).
   */
  function lookupRequest(data: Uint8Array): LookupRequest | undefined {
    const body = parseJsonOrUndefined(data) as { backend?: unknown; tool?: unknown; arguments?: unknown; conversationId?: unknown } | undefined;
    if (typeof body !== "object" || body === null || typeof body.backend !== "string" || !isBackendName(body.backend) || typeof body.tool !== "string")
      return undefined;
    const args = body.arguments ?? {};
    if (typeof args !== "object" || args === null || Array.isArray(args)) return undefined;
    const conversationId = typeof body.conversationId === "string" && CONVERSATION_ID_PATTERN.test(body.conversationId) ? body.conversationId : undefined;
    return { backend: body.backend, tool: body.tool, arguments: args as Record<string, unknown>, ...(conversationId ? { conversationId } : {}) };
  }

  /**
   * The key the router sent, if it is the one this request has. A key that does not match its request
   * (sent by something other than a router) is not used: no entry is served or stored under it.
   */
  function verifiedKey(request: { backend: string; tool: string; arguments: Record<string, unknown> }, h: MsgHdrs): string | undefined {
    const sent = h.get(Headers.CacheKey);
    const backend = config.backends[request.backend];
    if (!sent || !backend) return undefined;
    const key = cacheKeyFor(request, { ttlMs: 0, vary: backend.cache.vary }, h);
    if (key === sent) return key;
    log.debug({ backend: request.backend, tool: request.tool }, "ignoring a cache key that does not match its request");
    return undefined;
  }

  /** A miss: on to the backend's callers with the budget left; they answer the client (and offer us the result). */
  function forward(msg: Msg, h: MsgHdrs, replyTo: string, backend: string, deadline: number, key: string | undefined, done: () => void): void {
    counts.misses += 1;
    miss.inc();
    const now = monotonicNow();
    if (deadline - now <= 1) {
      answerError(replyTo, errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed in the cache"));
      return done();
    }
    h.set(Headers.TimeoutMs, stampBudget(deadline, now));
    if (key === undefined) h.delete(Headers.CacheKey);
    h.delete(Headers.ReplyTo);
    h.delete(Headers.CacheTicket);
    nc.publish(subjects.backendCall(backend), msg.data, { reply: replyTo, headers: h });
    done();
  }

  /**
   * Remember when entries of a backend (or a tool) were invalidated. Only the last maxBudget matters (no
   * call is older), so older marks are dropped once there are many (anyone may publish an invalidation).
   */
  function markInvalidated(backend: string, tool: string | undefined, now = monotonicNow()): void {
    if (invalidatedAt.size >= MAX_INVALIDATION_MARKS) {
      for (const [k, at] of invalidatedAt) if (now - at > config.limits.maxBudgetMs) invalidatedAt.delete(k);
    }
    invalidatedAt.set(tool === undefined ? backend : `${backend}\0${tool}`, now);
  }

  function isStale(backend: string, tool: string, startedAt: number): boolean {
    const at = Math.max(invalidatedAt.get(backend) ?? -Infinity, invalidatedAt.get(`${backend}\0${tool}`) ?? -Infinity);
    return at >= startedAt;
  }

  /** A caller's result: a head line (CacheSetHead), then the result's JSON. */
  function handleSet(msg: Msg): void {
    const text = decoder.decode(msg.data);
    const newline = text.indexOf("\n");
    const head = CacheSetHeadSchema.safeParse(newline > 0 ? parseJsonOrUndefined(msg.data.subarray(0, newline)) : undefined);
    if (!head.success) return void log.debug("ignoring a malformed cache store");
    const { key, backend, tool, endpoint, ttlMs, ageMs } = head.data;
    // The key must be the backend's and tool's it names, or an invalidation of them would miss it.
    const owner = parseCacheKey(key);
    if (owner?.backend !== backend || owner.tool !== tool) return void log.debug({ backend, tool }, "ignoring a cache store whose key is not its tool's");
    const result = text.slice(newline + 1);
    if (Buffer.byteLength(result) > settings.maxValueBytes) return void metrics.cacheStores.inc({ outcome: "too_large" });
    // Relative age, like budgets: hosts' clocks need not agree.
    if (isStale(backend, tool, monotonicNow() - ageMs)) return void metrics.cacheStores.inc({ outcome: "stale" });
    const entry: Entry = { result, endpoint, expiresAt: Date.now() + ttlMs - ageMs };
    memory.set(key, entry);
    counts.stores += 1;
    if (!shared) return void metrics.cacheStores.inc({ outcome: "stored" });
    inFlight.track(
      shared.put(key, entry).then(
        () => metrics.cacheStores.inc({ outcome: "stored" }),
        (err: unknown) => {
          metrics.cacheStores.inc({ outcome: "failed" });
          log.debug({ err: (err as Error).message }, "could not store in the shared tier");
        },
      ),
    );
  }

  /** Drop entries from this replica's memory, and remember when (a store of an older call is then refused). */
  function forget(backend: string, tool: string | undefined): number {
    markInvalidated(backend, tool);
    return memory.invalidate(backend, tool);
  }

  /**
   * Purge the shared tier (one replica does this for every invalidation; each drops its own memory).
   * Purged twice: a replica that had not heard of the invalidation yet may be writing an older result
   * to the bucket just as the first purge runs. Returns how many entries the first purge removed.
   */
  async function purge(backend: string, tool: string | undefined, reason: string): Promise<number> {
    if (!shared) return 0;
    const removed = await shared.invalidate(backend, tool);
    log.info({ backend, tool, reason, removed }, "cache entries invalidated");
    const again = setTimeout(() => {
      repurges.delete(again);
      shared.invalidate(backend, tool).catch((err: unknown) => log.debug({ err: (err as Error).message }, "second purge failed"));
    }, REPURGE_AFTER_MS);
    repurges.add(again);
    return removed;
  }

  /** `toolbus cache invalidate`: every replica forgets (the broadcast goes first), then the bucket is purged. */
  async function handleInvalidate(msg: Msg): Promise<void> {
    const decoded = decodeRequest(msg.data, CacheInvalidateRequestSchema, config.limits.maxRequestBytes);
    if (!decoded.ok) return void respondJson(msg, decoded.reply, maxPayload());
    const { backend, tool } = decoded.value;
    const fromMemory = forget(backend, tool);
    const event: CacheInvalidated = { backend, reason: "requested", workerId: deps.workerId, ...(tool !== undefined ? { tool } : {}) };
    nc.publish(subjects.cacheInvalidated(), encodeJson(event));
    if (!shared) return void respondJson(msg, { ok: true, removed: fromMemory, shared: false } satisfies CacheInvalidateOkReply, maxPayload());
    try {
      const removed = await purge(backend, tool, "requested");
      respondJson(msg, { ok: true, removed, shared: true } satisfies CacheInvalidateOkReply, maxPayload());
    } catch (err) {
      log.warn({ backend, tool, err: (err as Error).message }, "could not purge the shared tier");
      const reply = errorReply(
        ErrorCode.BACKEND_UNAVAILABLE,
        `every cache replica dropped the entries from memory, but the shared tier (KV ${kvBuckets.cache}) could not be purged: ${(err as Error).message}; its entries expire with their TTL`,
      );
      respondJson(msg, reply, maxPayload());
    }
  }

  const why = { tools: "its tools changed", resources: "a resource changed", restarted: "its server restarted" } as const;

  const heartbeat = (status: CacheHeartbeat["status"]): CacheHeartbeat => ({ workerId: deps.workerId, status, intervalMs: options.heartbeatMs });
  const status = (): CacheStatus => ({
    workerId: deps.workerId,
    hits: { l1: counts.l1, l2: counts.l2 },
    misses: counts.misses,
    stores: counts.stores,
    evictions: memory.evictions,
    entries: memory.entries,
    bytes: memory.bytes,
    shared: shared !== undefined,
  });
  const beat = (state: CacheHeartbeat["status"]): void => {
    metrics.cacheBytes.set(memory.bytes);
    metrics.cacheEntries.set(memory.entries);
    metrics.cacheEvictions.inc(memory.evictions - evictionsCounted);
    evictionsCounted = memory.evictions;
    if (!nc.isClosed()) nc.publish(subjects.cacheHeartbeat(), encodeJson(heartbeat(state)));
  };

  const guard =
    (name: string, fn: (msg: Msg) => void | Promise<void>) =>
    (_err: unknown, msg: Msg): void => {
      try {
        const work = fn(msg);
        if (work) inFlight.track(work.catch((err: unknown) => log.error({ err }, `cache ${name} handler failed`)));
      } catch (err) {
        // A bug must not take the cache down; the router's watchdog sends an unanswered call on.
        log.error({ err }, `cache ${name} handler failed`);
      }
    };

  const subscriptions: Subscription[] = [
    // Every replica drops what another replica was asked to invalidate ...
    nc.subscribe(subjects.cacheInvalidated(), {
      callback: guard("invalidated", (msg) => {
        const event = CacheInvalidatedSchema.safeParse(parseJsonOrUndefined(msg.data));
        if (event.success && event.data.workerId !== deps.workerId) forget(event.data.backend, event.data.tool);
      }),
    }),
    // ... and hears for itself of a change a caller reported, so none stores an older result after it ...
    nc.subscribe(subjects.backendChangedAll(), {
      callback: guard("changed", (msg) => {
        const change = BackendChangedSchema.safeParse(parseJsonOrUndefined(msg.data));
        if (change.success) forget(change.data.backend, undefined);
      }),
    }),
    // ... while one replica purges the shared tier for it.
    nc.subscribe(subjects.backendChangedAll(), {
      queue: queueGroups.cache(),
      callback: guard("changed-purge", async (msg) => {
        const change = BackendChangedSchema.safeParse(parseJsonOrUndefined(msg.data));
        if (!change.success) return;
        await purge(change.data.backend, undefined, why[change.data.what]).catch((err: unknown) =>
          log.warn({ backend: change.data.backend, err: (err as Error).message }, "could not purge the shared tier; its entries expire with their TTL"),
        );
      }),
    }),
    nc.subscribe(subjects.cacheDiscovery(), { callback: (_err, msg) => void msg.respond(encodeJson(heartbeat("up"))) }),
    nc.subscribe(subjects.cacheStatus(), { callback: (_err, msg) => void msg.respond(encodeJson(status())) }),
  ];

  const service = await addService(nc, {
    name: "toolbus-cache",
    version: TOOLBUS_VERSION,
    description: "toolbus cache: answers repeated read-only tool calls from memory or NATS KV",
    workerId: deps.workerId,
    metadata: { shared: String(shared !== undefined) },
  });
  const queue = queueGroups.cache();
  service.addEndpoint("lookup", { subject: subjects.cacheLookup(), queue, handler: guard("lookup", handleLookup) });
  service.addEndpoint("set", { subject: subjects.cacheSet(), queue, handler: guard("set", handleSet) });
  service.addEndpoint("invalidate", { subject: subjects.cacheInvalidate(), queue, handler: guard("invalidate", handleInvalidate) });
  await nc.flush();
  beat("up");
  const timer = setInterval(() => beat("up"), options.heartbeatMs);
  timer.unref();
  log.info({ shared: shared !== undefined, maxEntries: settings.maxEntries, maxBytes: settings.maxBytes }, "cache started");

  return {
    name: "cache",
    status,
    // A cache is never needed to serve: without one, calls go straight to the callers.
    notReady: () => [],
    ...stopOnce(async (graceMs = 10_000) => {
      clearInterval(timer);
      for (const t of repurges) clearTimeout(t);
      repurges.clear();
      // Routers stop handing us calls at once, rather than after missed heartbeats.
      beat("down");
      await service.stop();
      await inFlight.idle(graceMs);
      acks.flush();
      await chat.close();
      await Promise.allSettled(subscriptions.map((s) => s.drain()));
      memory.clear();
      log.info("cache stopped");
    }),
  };
}
