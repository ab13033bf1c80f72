import type { KV, NatsConnection } from "nats";
import type { Logger } from "./logger.js";

/** How long a lease lasts unless renewed: the owner renews it three times per lease. */
export const LEASE_MS = 3_000;

/**
 * Which pieces of shared work (a prober's backends, a chat-log writer's partitions) this replica
 * does. Replicas share them through a KV bucket whose entries expire (`LEASE_MS`): the first to create
 * a piece's key owns it and renews it; when the owner dies its key expires and another replica's
 * create succeeds, within about one lease. A stopping owner deletes its keys, so the handover is
 * immediate. Without JetStream every replica owns everything (as a single replica would).
 * `onChange` hears every piece taken or lost.
 */
export class Leases {
  /** Owned backends, with the revision of our entry (an update must name it). */
  readonly #owned = new Map<string, number>();
  /** Pieces being given back: still renewed (with their revision) until their work has stopped. */
  readonly #releasing = new Map<string, number>();
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
    /** A piece taken or lost; for a piece given back, the key is released only once this settles. */
    private readonly onChange: (name: string, owned: boolean) => void | Promise<void> = () => undefined,
    /** What a piece is called in the logs ("backend", "partition"). */
    private readonly what = "backend",
    /**
     * Share the pieces evenly: each replica announces itself in the bucket (`member.<holder>`) and
     * owns at most its share (pieces ÷ replicas, rounded up), giving back the rest for a newcomer.
     * Without it the first replica takes everything and the others wait for it to die.
     */
    private readonly balance = false,
    /**
     * Without the bucket: true (a prober) owns everything, as a single replica would; false (a chat-log
     * writer, which two replicas must never share a piece of) keeps trying to open it and owns nothing meanwhile.
     */
    private readonly withoutBucketOwnAll = true,
    /** Replicas of the bucket, when this creates it. */
    private readonly replicas = 1,
  ) {}

  /** Open the bucket and take what is free; then keep renewing and taking over. */
  async start(): Promise<void> {
    for (let wait = 500; ; wait = Math.min(10_000, wait * 2)) {
      try {
        this.#kv = await this.nc.jetstream().views.kv(this.bucket, { history: 1, ttl: LEASE_MS, replicas: this.replicas });
        break;
      } catch (err) {
        if (this.withoutBucketOwnAll) {
          this.log.warn({ err: (err as Error).message }, `no KV bucket ${this.bucket} (is JetStream enabled?); taking every ${this.what}`);
          this.#everything = true;
          for (const name of this.backends) void this.onChange(name, true);
          return;
        }
        this.log.warn(
          { err: (err as Error).message, retryInMs: wait },
          `no KV bucket ${this.bucket} (is JetStream enabled?); taking no ${this.what} until it opens`,
        );
        await new Promise((r) => setTimeout(r, wait));
        if (this.#stopped) return;
      }
    }
    // Someone who opened the bucket first without a TTL (a tool, a test) would make leases last forever.
    const { ttl } = await this.#kv.status();
    if (ttl !== LEASE_MS)
      this.log.error({ ttl, expected: LEASE_MS }, `KV bucket ${this.bucket} has the wrong TTL: a dead replica's leases will not expire; delete the bucket`);
    if (this.balance) {
      // Announce ourselves and give replicas starting with us a round to do the same, so that each
      // takes its share from the start rather than all taking everything and handing it back.
      await this.#kv.put(`member.${this.holder}`, this.holder).catch(() => undefined);
      await new Promise((r) => setTimeout(r, Math.floor(LEASE_MS / 3)));
    }
    if (this.#stopped) return;
    await this.#tick();
    // Stopped while starting: no timer may outlive the stop.
    if (this.#stopped) return;
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

  /** With `balance`: renew our membership and return how many pieces we may own. */
  async #share(kv: KV): Promise<number> {
    if (!this.balance) return Infinity;
    try {
      await kv.put(`member.${this.holder}`, this.holder);
      let members = 0;
      for await (const _key of await kv.keys("member.*")) members += 1;
      return Math.ceil(this.backends.length / Math.max(1, members));
    } catch {
      return Infinity;
    }
  }

  async #renewOrTake(): Promise<void> {
    const kv = this.#kv;
    if (!kv) return;
    const share = await this.#share(kv);
    // Over our share (a replica joined): give back the last pieces we took, for it to take. Released
    // (the key deleted) only once our work on it has stopped, so two replicas never work on it at once;
    // meanwhile it is renewed with the rest, however long the stop takes, and the rounds go on.
    for (const backend of [...this.#owned.keys()].slice(Math.min(share, this.#owned.size))) {
      if (this.#stopped) return;
      this.#releasing.set(backend, this.#owned.get(backend)!);
      this.#owned.delete(backend);
      this.log.info({ [this.what]: backend }, `lease given back: ${this.what} ${backend} goes to another replica`);
      void Promise.resolve(this.onChange(backend, false))
        .catch(() => undefined)
        .then(async () => {
          this.#releasing.delete(backend);
          await kv.delete(backend).catch(() => undefined);
        });
    }
    await Promise.all(
      [...this.#releasing].map(async ([backend, revision]) => {
        const renewed = await kv.update(backend, this.holder, revision).catch(() => undefined);
        if (renewed !== undefined && this.#releasing.has(backend)) this.#releasing.set(backend, renewed);
      }),
    );
    // Renew what we hold, all at once (a piece's key is independent of the others'; one at a time,
    // 16 pieces took a third of a second) ...
    await Promise.all(this.backends.filter((b) => this.#owned.has(b)).map((backend) => this.#renewOrTakeOne(kv, backend)));
    // ... then try for free pieces, in waves of what our share still allows, starting at a place of
    // our own so that replicas starting together try different pieces first.
    const free = this.backends.filter((b) => !this.#owned.has(b) && !this.#releasing.has(b));
    const offset = free.length === 0 ? 0 : hashOf(this.holder) % free.length;
    const candidates = [...free.slice(offset), ...free.slice(0, offset)];
    while (this.#owned.size < share && candidates.length > 0 && !this.#stopped) {
      const wave = candidates.splice(0, share - this.#owned.size);
      await Promise.all(wave.map((backend) => this.#renewOrTakeOne(kv, backend)));
    }
  }

  async #renewOrTakeOne(kv: KV, backend: string): Promise<void> {
    if (this.#stopped) return;
    const revision = this.#owned.get(backend);
    try {
      if (revision !== undefined) {
        this.#owned.set(backend, await kv.update(backend, this.holder, revision));
      } else {
        const taken = await kv.create(backend, this.holder);
        if (this.#stopped) return;
        this.#owned.set(backend, taken);
        this.log.info({ [this.what]: backend }, `lease taken: ${this.what} ${backend} is ours`);
        void this.onChange(backend, true);
      }
    } catch (err) {
      // Someone else's entry is there, or our own under another revision (an update that timed out
      // but went through): read it to know which. Anything else (JetStream away) changes nothing.
      const entry = await kv.get(backend).catch(() => undefined);
      if (entry === undefined) return;
      if (entry && entry.length > 0 && entry.string() === this.holder) {
        if (revision === undefined) void this.onChange(backend, true);
        this.#owned.set(backend, entry.revision);
        return;
      }
      if (revision !== undefined) {
        this.log.info({ [this.what]: backend, err: (err as Error).message }, `lease lost: ${this.what} ${backend} is no longer ours`);
        this.#owned.delete(backend);
        void this.onChange(backend, false);
      }
    }
  }

  /**
   * Forget what we own (after an outage our leases may have expired and been taken): each piece's work
   * stops, and the next round takes back those still ours (our entry is adopted) and no others.
   */
  async reset(): Promise<void> {
    await this.#round;
    const owned = [...this.#owned.keys()];
    this.#owned.clear();
    await Promise.allSettled(owned.map((name) => Promise.resolve(this.onChange(name, false))));
  }

  /** Give up every lease at once, so another replica takes over now rather than when they expire. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#round;
    const kv = this.#kv;
    if (!kv) return;
    await Promise.allSettled([...this.#owned.keys(), ...(this.balance ? [`member.${this.holder}`] : [])].map((key) => kv.delete(key)));
    this.#owned.clear();
  }
}

/** A small stable hash of a string (FNV-1a). */
function hashOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}
