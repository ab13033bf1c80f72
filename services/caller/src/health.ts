import type { NatsConnection } from "nats";
import type { BackendConfig } from "@toolbus/config";
import { classify } from "@toolbus/mcp-http";
import type { Breaker } from "@toolbus/policies";
import {
  EndpointMovedSchema,
  HealthEventSchema,
  encodeJson,
  kvBuckets,
  subjects,
  type EndpointMoved,
  type HealthEvent,
  type HealthReport,
} from "@toolbus/protocol";
import type { Endpoint } from "./endpoint.js";

/**
 * A caller's side of health: it acts on the prober's word (breakers, moves), reads what it missed from
 * KV when it starts, and reports the stdio children only it can probe.
 */
export class CallerHealth {
  /** Endpoints that have connected at least once: one still starting is not reported down. */
  readonly #connected = new Set<Endpoint>();
  #reporter: NodeJS.Timeout | undefined;
  #reporting = false;
  #stopping = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly backend: BackendConfig,
    private readonly endpoints: readonly Endpoint[],
    private readonly breakers: ReadonlyMap<Endpoint, Breaker>,
    /** This caller replica (a stdio child's events name the replica that owns it). */
    private readonly workerId: string,
  ) {}

  /** An endpoint connected (for the first time, or again). */
  connected(endpoint: Endpoint): void {
    this.#connected.add(endpoint);
  }

  /**
   * Health is what the callers' breakers share: an endpoint the prober finds unhealthy is refused at
   * once (no call has to fail on it first); one found healthy again gets a probe call at once. Changes
   * only: a heartbeat repeats a state the breakers already heard, and must not cut short a recovery
   * time that failed calls started.
   */
  onHealth(event: HealthEvent): void {
    // A stdio child's health concerns only the caller replica that owns it.
    if (!event.change || (event.caller !== undefined && event.caller !== this.workerId)) return;
    const endpoint = this.endpoints.find((e) => e.id === event.endpoint);
    const breaker = endpoint && this.breakers.get(endpoint);
    if (!endpoint || !breaker) return;
    if (event.state === "unhealthy" || event.state === "lost") {
      breaker.open(`health prober: ${event.state} (${event.reason})`);
    } else if ((event.state === "healthy" || event.state === "degraded") && breaker.state === "open") {
      breaker.halfOpen(`health prober: ${event.state} (${event.reason})`);
      // It is back: reconnect now rather than when the backoff says.
      endpoint.wake();
    }
  }

  onMoved(moved: EndpointMoved): void {
    const endpoint = this.endpoints.find((e) => e.id === moved.endpoint);
    if (!endpoint || !movable(endpoint) || !this.#movable(moved.newPort)) return;
    // The prober has just seen the server answer `initialize` there: the next call may probe it now.
    this.breakers.get(endpoint)!.halfOpen(`moved to port ${moved.newPort} (health prober)`);
    endpoint.moveTo(moved.newPort);
  }

  /**
   * What a caller that starts late has missed: where endpoints moved (read before they connect, so one
   * that moved is reached where it is now) and which are unhealthy. No bucket, no JetStream: nothing to learn.
   */
  async fromKv(): Promise<void> {
    if (this.backend.kind !== "mcp-http") return;
    await this.#perEndpoint(kvBuckets.endpoints, (endpoint, value) => {
      const moved = EndpointMovedSchema.safeParse(value);
      if (moved.success && movable(endpoint) && this.#movable(moved.data.newPort)) endpoint.moveTo(moved.data.newPort);
    });
    await this.#perEndpoint(kvBuckets.health, (endpoint, value) => {
      const health = HealthEventSchema.safeParse(value);
      if (health.success && (health.data.state === "unhealthy" || health.data.state === "lost"))
        this.breakers.get(endpoint)!.open(`health prober: ${health.data.state} (${health.data.reason})`);
    });
  }

  /** Each endpoint's entry (key `<backend>.<n>`) in `bucket`, if the bucket exists. */
  async #perEndpoint(bucket: string, use: (endpoint: Endpoint, value: unknown) => void): Promise<void> {
    try {
      const kv = await this.nc.jetstream().views.kv(bucket, { bindOnly: true });
      for (let i = 0; i < this.endpoints.length; i++) {
        const entry = await kv.get(`${this.backend.name}.${i}`);
        if (entry && entry.length > 0) use(this.endpoints[i]!, entry.json());
      }
    } catch {
      // Nothing stored yet.
    }
  }

  /** A move is taken only into the configured range (a stray message cannot send our credentials elsewhere). */
  #movable(port: number): boolean {
    const range = this.backend.kind === "mcp-http" ? this.backend.rediscover : undefined;
    return range !== undefined && port >= range.portFrom && port <= range.portTo;
  }

  /**
   * Stdio children are ours alone (the prober must never start a copy of one): on the health interval,
   * ping each through its own connection and report to the prober, which keeps their state as for any
   * endpoint. One round at a time; a child that is down is a failed probe.
   */
  startReports(): void {
    if (this.backend.kind !== "mcp-stdio") return;
    this.#reporter = setInterval(() => void this.#report(), this.backend.health.intervalMs);
    this.#reporter.unref();
  }

  /** No more reports: the children's pings fail now for no fault of theirs. */
  stop(): void {
    this.#stopping = true;
    clearInterval(this.#reporter);
  }

  async #report(): Promise<void> {
    if (this.#reporting || this.#stopping || this.nc.isClosed()) return;
    this.#reporting = true;
    const { name, health } = this.backend;
    try {
      await Promise.all(
        this.endpoints
          .filter((endpoint) => this.#connected.has(endpoint))
          .map(async (endpoint) => {
            const base = { backend: name, endpoint: endpoint.id, caller: this.workerId, intervalMs: health.intervalMs };
            let report: HealthReport;
            try {
              report = { ...base, ok: true, latencyMs: Math.round((await endpoint.ping(health.timeoutMs)) * 1000) / 1000 };
            } catch (err) {
              report = { ...base, ok: false, reason: classify(err, { sessionSent: false }).message };
            }
            if (this.#stopping || this.nc.isClosed()) return;
            try {
              this.nc.publish(subjects.healthReport(name), encodeJson(report));
            } catch {
              // draining: nobody to tell
            }
          }),
      );
    } finally {
      this.#reporting = false;
    }
  }
}

/** An endpoint that can follow its server to another port (an HTTP one); told apart without loading the HTTP code. */
function movable(endpoint: Endpoint): endpoint is Endpoint & { moveTo(port: number): void } {
  return typeof (endpoint as { moveTo?: unknown }).moveTo === "function";
}
