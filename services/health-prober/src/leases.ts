import type { KV, NatsConnection } from "nats";
import type { Logger } from "@toolbus/runtime";

/** How long a lease lasts unless renewed: the owner renews it three times per lease. */
export const LEASE_MS = 3_000;

/**
 * Which backends this prober replica probes. Replicas share the work through a KV bucket whose
 * entries expire (`LEASE_MS`): the first to create a backend's key owns it and renews it; when the
 * owner dies its key expires and another replica's create succeeds, within about one lease. A
 * stopping owner deletes its keys, so the handover is immediate. Without JetStream every replica
 * owns everything (each probes all, as a single prober would).
 */
export class Leases {
  /** Owned backends, with the revision of our entry (an update must name it). */
  readonly #owned = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #kv: KV | undefined;
  #everything = false;
  /** The round under way (rounds never overlap: two updates naming one revision would drop our own lease). */
  #round: Promise<void> | undefined;
  #stopped = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly bucket: string,
    private readonly backends: readonly string[],
    private readonly holder: string,
    private readonly log: Logger,
  ) {}

  /** Open the bucket and take what is free; then keep renewing and taking over. */
  async start(): Promise<void> {
    try {
      this.#kv = await this.nc.jetstream().views.kv(this.bucket, { history: 1, ttl: LEASE_MS });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, `no KV bucket ${this.bucket} (is JetStream enabled?); probing every backend`);
      this.#everything = true;
      return;
    }
    // Someone who opened the bucket first without a TTL (a tool, a test) would make leases last forever.
    const { ttl } = await this.#kv.status();
    if (ttl !== LEASE_MS)
      this.log.error({ ttl, expected: LEASE_MS }, `KV bucket ${this.bucket} has the wrong TTL: a dead prober's leases will not expire; delete the bucket`);
    await this.#tick();
    this.#timer = setInterval(() => void this.#tick(), Math.floor(LEASE_MS / 3));
    this.#timer.unref();
  }

  owns(backend: string): boolean {
    return !this.#stopped && (this.#everything || this.#owned.has(backend));
  }

  #tick(): Promise<void> {
    this.#round ??= this.#renewOrTake().finally(() => (this.#round = undefined));
    return this.#round;
  }

  async #renewOrTake(): Promise<void> {
    const kv = this.#kv;
    if (!kv) return;
    for (const backend of this.backends) {
      if (this.#stopped) return;
      const revision = this.#owned.get(backend);
      try {
        if (revision !== undefined) {
          this.#owned.set(backend, await kv.update(backend, this.holder, revision));
        } else {
          const taken = await kv.create(backend, this.holder);
          if (this.#stopped) return;
          this.#owned.set(backend, taken);
          this.log.info({ backend }, "probing backend (lease taken)");
        }
      } catch (err) {
        // Someone else's entry is there, or our own under another revision (an update that timed out
        // but went through): read it to know which. Anything else (JetStream away) changes nothing.
        const entry = await kv.get(backend).catch(() => undefined);
        if (entry === undefined) continue;
        if (entry && entry.length > 0 && entry.string() === this.holder) {
          this.#owned.set(backend, entry.revision);
          continue;
        }
        if (revision !== undefined) this.log.info({ backend, err: (err as Error).message }, "no longer probing backend (lease lost)");
        this.#owned.delete(backend);
      }
    }
  }

  /** Give up every lease at once, so another replica takes over now rather than when they expire. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#round;
    const kv = this.#kv;
    if (!kv) return;
    await Promise.allSettled([...this.#owned.keys()].map((backend) => kv.delete(backend)));
    this.#owned.clear();
  }
}
