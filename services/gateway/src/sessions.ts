import { randomUUID } from "node:crypto";
import type { KV, NatsConnection } from "nats";
import { decodeJson, encodeJson, kvBuckets } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";

/** What every replica needs to know of a session another one started. */
export interface SessionRecord {
  /** The token (its name) that started it: a request for it with another token is refused. */
  token: string;
  protocolVersion: string;
  createdAt: number;
}

interface Held {
  record: SessionRecord;
  /** Last read from the bucket, last written to it, last used here. */
  checkedAt: number;
  writtenAt: number;
  usedAt: number;
}

/** A local copy is checked against the shared one at most this often (a DELETE may have gone to another replica). */
const RECHECK_MS = 2_000;

/**
 * MCP sessions, shared by every gateway replica through a JetStream KV bucket (entries expire after
 * `ttlMs` unused): a session started at one replica is accepted by any, so no request needs a sticky
 * route and no session is lost with a pod. Without JetStream, sessions are this replica's alone.
 */
export class SessionStore {
  #kv: KV | undefined;
  readonly #local = new Map<string, Held>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly ttlMs: number,
    /** Replicas of the bucket, when this creates it. */
    private readonly replicas = 1,
  ) {}

  async start(): Promise<void> {
    try {
      this.#kv = await this.nc.jetstream().views.kv(kvBuckets.gatewaySessions, { ttl: this.ttlMs, history: 1, replicas: this.replicas });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "no JetStream: MCP sessions are kept by this gateway replica alone (others will not know them)");
    }
  }

  async create(record: SessionRecord): Promise<string> {
    const id = randomUUID();
    await this.#kv?.put(id, encodeJson(record));
    const now = Date.now();
    this.#local.set(id, { record, checkedAt: now, writtenAt: now, usedAt: now });
    return id;
  }

  /** The session `id`, from here or from the shared bucket; undefined when nobody knows it (404). */
  async get(id: string): Promise<SessionRecord | undefined> {
    const now = Date.now();
    const local = this.#local.get(id);
    if (local && (now - local.checkedAt < RECHECK_MS || !this.#kv)) {
      this.#touch(id, local, now);
      return local.record;
    }
    if (!this.#kv) return undefined;
    const entry = await this.#kv.get(id).catch(() => null);
    if (!entry || entry.operation !== "PUT" || entry.length === 0) {
      this.#local.delete(id);
      return undefined;
    }
    const record = decodeJson(entry.value) as SessionRecord;
    const held: Held = { record, checkedAt: now, writtenAt: local?.writtenAt ?? now, usedAt: now };
    this.#local.set(id, held);
    this.#touch(id, held, now);
    return record;
  }

  /** Keep a session in use alive in the bucket (whose entries expire `ttlMs` after their last write). */
  #touch(id: string, held: Held, now: number): void {
    held.usedAt = now;
    if (!this.#kv || now - held.writtenAt < this.ttlMs / 4) return;
    held.writtenAt = now;
    this.#kv.put(id, encodeJson(held.record)).catch((err: unknown) => this.log.debug({ err: (err as Error).message }, "could not refresh an MCP session"));
  }

  async delete(id: string): Promise<void> {
    this.#local.delete(id);
    await this.#kv?.delete(id).catch(() => undefined);
  }

  /** This replica has the session in memory (it was used here within the TTL). */
  holds(id: string): boolean {
    return this.#local.has(id);
  }

  /** Forget local copies not used for a whole TTL (the bucket forgets them itself). */
  sweep(): void {
    const now = Date.now();
    for (const [id, held] of this.#local) if (now - held.usedAt > this.ttlMs) this.#local.delete(id);
  }
}
