import type { Msg } from "nats";
import type { BackendConfig, McpHttpBackendConfig } from "@toolbus/config";
import { encodeJson, kvBuckets, queueGroups, subjects, type HealthEvent, type HealthTableReply } from "@toolbus/protocol";
import { TOOLBUS_VERSION, addService, maxPayloadOf, respondJson, type Worker, type WorkerDeps } from "@toolbus/runtime";
import { HttpProbe } from "./http-probe.js";
import { HealthTracker } from "./tracker.js";

export interface HealthProberOptions {
  /** Every configured backend; the prober probes the network ones (streamable HTTP today). */
  backends: readonly BackendConfig[];
  /** How often each endpoint's state is published even when it did not change. */
  heartbeatMs: number;
}

export interface HealthProberWorker extends Worker {
  /** The current table (what `toolbus.v1.health.get` answers). */
  table(): HealthEvent[];
}

/** KV keys are `<backend>.<n>`: subject-like tokens, so `#` cannot appear in them. */
const kvKey = (backend: string, index: number): string => `${backend}.${index}`;

/** One endpoint being probed. */
interface Target {
  readonly backend: McpHttpBackendConfig;
  readonly index: number;
  readonly id: string;
  readonly probe: HttpProbe;
  readonly tracker: HealthTracker;
  timer?: NodeJS.Timeout;
  probing?: Promise<void>;
}

/**
 * The health prober: probes every network endpoint on its backend's interval, tracks its state
 * (healthy, degraded, unhealthy, with thresholds), publishes every change and a periodic heartbeat on
 * `toolbus.v1.evt.health.<backend>`, keeps the latest state per endpoint in KV `toolbus_health` for
 * late joiners, and answers `toolbus.v1.health.get` with the whole table.
 */
export async function startHealthProber(deps: WorkerDeps, options: HealthProberOptions): Promise<HealthProberWorker> {
  const { nc } = deps;
  const log = deps.logger.child({ worker: "health-prober", workerId: deps.workerId });
  let stopping = false;

  const targets: Target[] = options.backends.flatMap((backend) =>
    backend.kind !== "mcp-http"
      ? []
      : backend.urls.map((url, index) => ({
          backend,
          index,
          id: `${backend.name}#${index}`,
          probe: new HttpProbe(url, backend.headers),
          tracker: new HealthTracker(backend.health),
        })),
  );

  // The latest state per endpoint, for whoever subscribes late. Without JetStream the events still flow.
  const kv = await nc
    .jetstream()
    .views.kv(kvBuckets.health, { history: 1 })
    .catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, `no KV bucket ${kvBuckets.health} (is JetStream enabled?); publishing events only`);
      return undefined;
    });

  const eventOf = (t: Target, change: boolean, previous = t.tracker.state): HealthEvent => ({
    backend: t.backend.name,
    endpoint: t.id,
    state: t.tracker.state,
    previous,
    reason: t.tracker.reason,
    latencyMs: t.tracker.latencyMs,
    since: new Date(t.tracker.since).toISOString(),
    time: new Date().toISOString(),
    proberId: deps.workerId,
    change,
  });

  function publish(t: Target, event: HealthEvent): void {
    if (nc.isClosed()) return;
    const data = encodeJson(event);
    nc.publish(subjects.healthEvents(t.backend.name), data);
    if (event.change)
      kv?.put(kvKey(t.backend.name, t.index), data).catch((err: unknown) => log.debug({ err: (err as Error).message }, "could not store health state"));
  }

  const STATE_VALUE: Record<HealthEvent["state"], number> = { unknown: 0, healthy: 1, degraded: 2, unhealthy: 3 };
  const labels = (t: Target) => ({ backend: t.backend.name, endpoint: t.id });
  for (const t of targets) deps.metrics.healthState.set(labels(t), 0);

  async function probeOnce(t: Target): Promise<void> {
    const result = await t.probe.probe(t.backend.health.timeoutMs);
    if (stopping) return;
    if (result.ok) deps.metrics.probeDuration.observe(labels(t), result.latencyMs / 1000);
    else deps.metrics.probeFailures.inc(labels(t));
    const transition = t.tracker.record(result);
    deps.metrics.healthState.set(labels(t), STATE_VALUE[t.tracker.state]);
    if (!transition) return;
    const event = eventOf(t, true, transition.previous);
    (transition.state === "unhealthy" ? log.warn : log.info).call(
      log,
      { backend: t.backend.name, endpoint: t.id, state: transition.state, previous: transition.previous, reason: transition.reason },
      `endpoint ${transition.previous} → ${transition.state}`,
    );
    publish(t, event);
  }

  function schedule(t: Target, delayMs: number): void {
    if (stopping) return;
    t.timer = setTimeout(() => {
      t.probing = probeOnce(t)
        .catch((err: unknown) => log.error({ err, endpoint: t.id }, "probe failed unexpectedly"))
        .finally(() => {
          t.probing = undefined;
          schedule(t, t.backend.health.intervalMs);
        });
    }, delayMs);
    t.timer.unref();
  }

  const service = await addService(nc, {
    name: "toolbus-health-prober",
    version: TOOLBUS_VERSION,
    description: "toolbus health prober: probes backends, publishes health events",
    workerId: deps.workerId,
  });
  const table = (): HealthEvent[] => targets.map((t) => eventOf(t, false));
  service.addEndpoint("get", {
    subject: subjects.healthGet(),
    queue: queueGroups.healthProber(),
    handler: (_err, msg: Msg) => {
      const reply: HealthTableReply = { ok: true, endpoints: table() };
      respondJson(msg, reply, maxPayloadOf(nc));
    },
  });
  await nc.flush();

  // First probes spread over the first interval, so many endpoints are not probed in one burst.
  targets.forEach((t, i) => schedule(t, Math.floor((t.backend.health.intervalMs * i) / Math.max(1, targets.length))));
  const heartbeat = setInterval(() => {
    for (const t of targets) publish(t, eventOf(t, false));
  }, options.heartbeatMs);
  heartbeat.unref();
  log.info({ endpoints: targets.map((t) => t.id) }, "health prober started");

  let stopped: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stoppedPromise = new Promise<void>((r) => (resolveStopped = r));
  return {
    name: "health-prober",
    table,
    notReady: () => [],
    stop: () => {
      stopped ??= (async () => {
        stopping = true;
        clearInterval(heartbeat);
        for (const t of targets) clearTimeout(t.timer);
        await service.stop();
        await Promise.allSettled(targets.map((t) => t.probing));
        await Promise.allSettled(targets.map((t) => t.probe.close()));
        log.info("health prober stopped");
        resolveStopped();
      })();
      return stopped;
    },
    stopped: stoppedPromise,
  };
}
