import { LRUCache } from "lru-cache";
import type { JetStreamManager, KV, NatsConnection } from "nats";
import { cacheKeyPrefix, kvBuckets } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";

/**
 * One cached result. `result` is the CallToolResult's JSON exactly as the caller answered it: a hit
 * is answered by pasting it into the reply, never parsing it.
 */
export interface Entry {
  readonly result: string;
  /** The endpoint that produced it (meta.endpoint of a hit). */
  readonly endpoint: string;
  /** Wall-clock ms: the shared tier is read by replicas on other hosts, whose monotonic clocks differ. */
  readonly expiresAt: number;
}

/** What an entry costs in memory, roughly: the strings (UTF-16) plus the bookkeeping around them. */
const ENTRY_OVERHEAD_BYTES = 200;
const sizeOf = (key: string, entry: Entry): number => 2 * (key.length + entry.result.length + entry.endpoint.length) + ENTRY_OVERHEAD_BYTES;

/** L1: this replica's memory, bounded by entries and bytes, each entry with its own TTL. */
export class MemoryTier {
  readonly #lru: LRUCache<string, Entry>;
  evictions = 0;

  constructor(options: { maxEntries: number; maxBytes: number }) {
    this.#lru = new LRUCache<string, Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry, key) => sizeOf(key, entry),
      // Only room-making counts as an eviction; expiry, replacement and invalidation do not.
      dispose: (_entry, _key, reason) => {
        if (reason === "evict") this.evictions += 1;
      },
    });
  }

  get(key: string): Entry | undefined {
    return this.#lru.get(key);
  }

  set(key: string, entry: Entry, now = Date.now()): void {
    const ttl = entry.expiresAt - now;
    if (ttl <= 0) return;
    this.#lru.set(key, entry, { ttl });
  }

  /** Drop every entry of `backend` (or of one tool of it); returns how many. */
  invalidate(backend: string, tool?: string): number {
    const prefix = cacheKeyPrefix(backend, tool);
    let removed = 0;
    for (const key of [...this.#lru.keys()]) {
      if (key.startsWith(prefix) && this.#lru.delete(key)) removed += 1;
    }
    return removed;
  }

  get entries(): number {
    return this.#lru.size;
  }

  get bytes(): number {
    return this.#lru.calculatedSize;
  }

  clear(): void {
    this.#lru.clear();
  }
}

/** An L2 value: a line of JSON with what is not the result, then the result's JSON as stored. */
export function encodeShared(entry: Entry): string {
  return `${JSON.stringify({ endpoint: entry.endpoint, expiresAt: entry.expiresAt })}\n${entry.result}`;
}

export function decodeShared(text: string): Entry | undefined {
  const newline = text.indexOf("\n");
  if (newline < 0) return undefined;
  try {
    const head = JSON.parse(text.slice(0, newline)) as { endpoint?: unknown; expiresAt?: unknown };
    if (typeof head.endpoint !== "string" || typeof head.expiresAt !== "number") return undefined;
    return { endpoint: head.endpoint, expiresAt: head.expiresAt, result: text.slice(newline + 1) };
  } catch {
    return undefined;
  }
}

const decoder = new TextDecoder();

/**
 * L2: KV bucket `toolbus_cache`, shared by every cache replica. The bucket's TTL (max age, which
 * nats-server 2.9 already has) bounds every entry; an entry's own shorter TTL is checked on read.
 * Every failure here is reported to the caller of these methods as "nothing found" or "not stored":
 * a cache fault never becomes a call failure.
 */
export class SharedTier {
  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
    private readonly streamName: string,
  ) {}

  /** Open (or create) the bucket; undefined when JetStream is not available. */
  static async open(
    nc: NatsConnection,
    options: { ttlMs: number; maxBytes: number; timeoutMs: number; replicas?: number },
    log: Logger,
  ): Promise<SharedTier | undefined> {
    try {
      const jsm = await nc.jetstreamManager({ timeout: Math.max(1_000, options.timeoutMs) });
      const kv = await nc
        .jetstream({ timeout: Math.max(1_000, options.timeoutMs) })
        .views.kv(kvBuckets.cache, { history: 1, ttl: options.ttlMs, maxBucketSize: options.maxBytes, replicas: options.replicas ?? 1 });
      const status = await kv.status();
      if (status.ttl !== options.ttlMs) {
        // Created earlier with another TTL: keep it (replicas must agree), and say which one applies.
        log.info({ bucket: kvBuckets.cache, ttlMs: status.ttl, configuredMs: options.ttlMs }, "cache bucket exists with another TTL; using it as it is");
      }
      return new SharedTier(kv, jsm, status.streamInfo.config.name);
    } catch (err) {
      log.warn({ err: (err as Error).message }, `no KV bucket ${kvBuckets.cache} (is JetStream enabled?); caching in memory only`);
      return undefined;
    }
  }

  /** The entry under `key`, or undefined (absent, expired, unreadable, or the bucket did not answer within `waitMs`). */
  async get(key: string, waitMs: number): Promise<Entry | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const found = await Promise.race([
        // A late failure after the timer won must not be an unhandled rejection.
        this.kv.get(key).catch(() => null),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), Math.max(0, waitMs));
        }),
      ]);
      if (!found || found.operation !== "PUT") return undefined;
      const entry = decodeShared(decoder.decode(found.value));
      return entry && entry.expiresAt > Date.now() ? entry : undefined;
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  async put(key: string, entry: Entry): Promise<void> {
    await this.kv.put(key, encodeShared(entry));
  }

  /** Remove every entry of `backend` (or of one tool of it) in one purge; returns how many. */
  async invalidate(backend: string, tool?: string): Promise<number> {
    const filter = `$KV.${kvBuckets.cache}.${cacheKeyPrefix(backend, tool)}>`;
    const response = await this.jsm.streams.purge(this.streamName, { filter });
    return response.purged;
  }
}
