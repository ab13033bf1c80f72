import type { Msg } from "nats";
import type { BackendConfig, McpHttpBackendConfig } from "@toolbus/config";
import {
  HealthEventSchema,
  HealthReportSchema,
  encodeJson,
  parseJsonOrUndefined,
  kvBuckets,
  queueGroups,
  subjects,
  EndpointMovedSchema,
  type EndpointMoved,
  type HealthEvent,
  type HealthTableReply,
} from "@toolbus/protocol";
import { Leases, TOOLBUS_VERSION, addService, answerInternal, maxPayloadOf, respondJson, stopOnce, type Worker, type WorkerDeps } from "@toolbus/runtime";
import { HttpProbe } from "./http-probe.js";

import { HealthTracker, type ProbeResult, type Transition } from "./tracker.js";

export interface HealthProberOptions {
  /** Every configured backend: the prober probes the network ones, and tracks the stdio ones from their callers' reports. */
  backends: readonly BackendConfig[];
  /** How often each endpoint's state is published even when it did not change. */
  heartbeatMs: number;
}

export interface HealthProberWorker extends Worker {
  /** The current table (what `toolbus.v1.health.get` answers). */
  table(): Promise<HealthEvent[]>;
}

/**
 * KV keys are `<backend>.<n>` (`.<caller>` after it for a stdio child): subject-like tokens, so `#`
 * cannot appear in them.
 */
const keyOf = (t: { backend: { name: string }; index: number; caller?: string }): string =>
  `${t.backend.name}.${t.index}${t.caller !== undefined ? `.${t.caller}` : ""}`;

/** One endpoint being probed: by this prober (HTTP), or by the caller that owns it (a stdio child). */
interface Target {
  readonly backend: BackendConfig;
  readonly index: number;
  readonly id: string;
  readonly tracker: HealthTracker;
  /** HTTP: the probe this prober runs. */
  readonly probe?: HttpProbe;
  /** Stdio: the caller replica that owns the child, and when it last reported. */
  readonly caller?: string;
  lastReport?: number;
  reportEveryMs?: number;
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

  const targets: Target[] = options.backends.flatMap((backend: BackendConfig) =>
    backend.kind !== "mcp-http"
      ? []
      : (backend as McpHttpBackendConfig).urls.map((url, index) => ({
          backend,
          index,
          id: `${backend.name}#${index}`,
          probe: new HttpProbe(url, (backend as McpHttpBackendConfig).headers),
          tracker: new HealthTracker(backend.health),
        })),
  );
  const byName = new Map(options.backends.map((b) => [b.name, b]));
  const endpointsKv = await nc
    .jetstream()
    .views.kv(kvBuckets.endpoints, { history: 1, replicas: deps.streamReplicas ?? 1 })
    .catch(() => undefined);
  // Endpoints that moved before this prober started (or took the backend over) are probed where they are.
  for (const t of targets) {
    const range = t.backend.kind === "mcp-http" ? t.backend.rediscover : undefined;
    if (!range || !endpointsKv || !t.probe) continue;
    const entry = await endpointsKv.get(keyOf(t)).catch(() => null);
    const moved = entry && entry.length > 0 ? EndpointMovedSchema.safeParse(entry.json()) : undefined;
    if (moved?.success && moved.data.newPort >= range.portFrom && moved.data.newPort <= range.portTo) await t.probe.moveTo(moved.data.newPort);
  }
  const leases = new Leases(nc, kvBuckets.healthLeases, [...byName.keys()], deps.workerId, log, undefined, "backend", false, true, deps.streamReplicas ?? 1);
  await leases.start();

  // The latest state per endpoint, for whoever subscribes late. Without JetStream the events still flow.
  const kv = await nc
    .jetstream()
    .views.kv(kvBuckets.health, { history: 1, replicas: deps.streamReplicas ?? 1 })
    .catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, `no KV bucket ${kvBuckets.health} (is JetStream enabled?); publishing events only`);
      return undefined;
    });

  const eventOf = (t: Target, change: boolean, previous = t.tracker.previous): HealthEvent => ({
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
    ...(t.caller !== undefined ? { caller: t.caller } : {}),
  });

  function publish(t: Target, event: HealthEvent): void {
    if (nc.isClosed()) return;
    const data = encodeJson(event);
    nc.publish(subjects.healthEvents(t.backend.name), data);
    if (event.change) kv?.put(keyOf(t), data).catch((err: unknown) => log.debug({ err: (err as Error).message }, "could not store health state"));
  }

  const STATE_VALUE: Record<HealthEvent["state"], number> = { unknown: 0, healthy: 1, degraded: 2, unhealthy: 3, lost: 4 };
  const labels = (t: Target) => ({ backend: t.backend.name, endpoint: t.caller ? `${t.id}@${t.caller}` : t.id });
  for (const t of targets) deps.metrics.healthState.set(labels(t), 0);

  async function probeOnce(t: Target): Promise<void> {
    // Another replica probes this backend; we keep our schedule to take over when it goes.
    if (!leases.owns(t.backend.name)) return;
    const result = await t.probe!.probe(t.backend.health.timeoutMs);
    if (stopping) return;
    recorded(t, result);
    // Still down (a move that died again, a lease taken back): look again; one search at a time.
    const down = t.tracker.state === "unhealthy" || t.tracker.state === "lost";
    if (down && t.backend.kind === "mcp-http" && t.backend.rediscover) void rediscover(t);
  }

  /** Feed a probe's outcome to the endpoint's tracker; publish and store a change. */
  function recorded(t: Target, result: ProbeResult): void {
    if (result.ok) deps.metrics.probeDuration.observe(labels(t), result.latencyMs / 1000);
    else deps.metrics.probeFailures.inc(labels(t));
    changed(t, t.tracker.record(result));
  }

  function changed(t: Target, transition: Transition | undefined): void {
    deps.metrics.healthState.set(labels(t), STATE_VALUE[t.tracker.state]);
    if (!transition) return;
    const event = eventOf(t, true, transition.previous);
    (transition.state === "unhealthy" || transition.state === "lost" ? log.warn : log.info).call(
      log,
      { backend: t.backend.name, endpoint: t.id, state: transition.state, previous: transition.previous, reason: transition.reason },
      `endpoint ${transition.previous} → ${transition.state}`,
    );
    publish(t, event);
    if (transition.state === "unhealthy" && t.probe && t.backend.kind === "mcp-http" && t.backend.rediscover) void rediscover(t);
  }

  /**
   * An unhealthy HTTP endpoint with a port range: look for its server on the other ports of the range
   * (the current one first), accepting a port only where the expected MCP server answers `initialize`.
   * Backoff between scans from 1 s, doubling, to 60 s; after `maxAttempts` scans the endpoint is `lost`
   * and still scanned at 60 s. Ends when it is found, when the probes find it back where it was, when
   * another replica takes the backend over, or on stop.
   */
  const rediscovering = new Set<Target>();
  async function rediscover(t: Target): Promise<void> {
    const backend = t.backend as McpHttpBackendConfig;
    const range = backend.rediscover!;
    const probe = t.probe!;
    if (rediscovering.has(t)) return;
    rediscovering.add(t);
    const rlog = log.child({ backend: backend.name, endpoint: t.id });
    try {
      for (let attempt = 1; ; attempt++) {
        const down = t.tracker.state === "unhealthy" || t.tracker.state === "lost";
        if (stopping || !down || !leases.owns(backend.name)) return;
        const expected = range.expectServer ?? probe.serverName;
        const previous = probe.port;
        rlog.info({ previous_port: previous, attempt }, `rediscovering port previous_port=${previous}`);
        const found = expected === undefined ? undefined : await scan(probe, previous, range, expected, Math.min(backend.health.timeoutMs, 1_000));
        // A scan takes a while: the probes may have found it meanwhile, or another replica taken over.
        if (stopping || !leases.owns(backend.name)) return;
        if (t.tracker.state !== "unhealthy" && t.tracker.state !== "lost") return;
        if (found === previous) return; // back where it was: the probes will see it
        if (found !== undefined) {
          rlog.info({ old_port: previous, new_port: found, server: expected }, `rediscovered on new port old_port=${previous} new_port=${found}`);
          await probe.moveTo(found);
          const moved: EndpointMoved = {
            backend: backend.name,
            endpoint: t.id,
            oldPort: previous,
            newPort: found,
            server: expected!,
            proberId: deps.workerId,
            time: new Date().toISOString(),
          };
          const data = encodeJson(moved);
          if (!nc.isClosed()) nc.publish(subjects.endpointEvents(backend.name), data);
          await endpointsKv?.put(keyOf(t), data).catch(() => undefined);
          return;
        }
        if (attempt === range.maxAttempts) changed(t, t.tracker.markLost(`not found on ports ${range.portFrom}-${range.portTo} after ${attempt} scans`));
        const backoff = Math.min(60_000, 1_000 * 2 ** Math.min(attempt - 1, 6));
        rlog.warn(
          { attempt, backoff, expected: expected ?? "(not known yet: the server never answered)" },
          `connection failed attempt=${attempt} backoff=${backoff}ms`,
        );
        await new Promise((r) => setTimeout(r, backoff).unref());
      }
    } finally {
      rediscovering.delete(t);
    }
  }

  // Stdio children, as their callers report them: one tracker per caller replica and child.
  const reported = new Map<string, Target>();
  const reports = nc.subscribe(subjects.healthReportAll(), {
    callback: (_err, msg) => {
      const parsed = HealthReportSchema.safeParse(parseJsonOrUndefined(msg.data));
      const backend = parsed.success ? byName.get(parsed.data.backend) : undefined;
      if (!parsed.success || !backend || backend.kind !== "mcp-stdio" || stopping || !leases.owns(backend.name)) return;
      const r = parsed.data;
      const key = `${r.caller}/${r.endpoint}`;
      let t = reported.get(key);
      if (!t) {
        const index = Number(/#(\d+)$/.exec(r.endpoint)?.[1] ?? 0);
        t = { backend, index, id: r.endpoint, caller: r.caller, tracker: new HealthTracker(backend.health) };
        reported.set(key, t);
        deps.metrics.healthState.set(labels(t), 0);
      }
      t.lastReport = Date.now();
      t.reportEveryMs = r.intervalMs;
      recorded(t, r.ok ? { ok: true, latencyMs: r.latencyMs ?? 0 } : { ok: false, reason: r.reason ?? "the caller's ping failed" });
    },
  });

  /** A caller that stopped reporting (stopped, or gone) takes its children's states with it. */
  function forgetSilentCallers(): void {
    const now = Date.now();
    for (const [key, t] of reported) {
      if (now - (t.lastReport ?? 0) < 5 * (t.reportEveryMs ?? options.heartbeatMs)) continue;
      reported.delete(key);
      deps.metrics.healthState.remove(labels(t));
      deps.metrics.probeDuration.remove(labels(t));
      deps.metrics.probeFailures.remove(labels(t));
      // Another replica may own the backend now and keep this key.
      if (leases.owns(t.backend.name)) kv?.delete(keyOf(t)).catch(() => undefined);
    }
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
  const owned = (): Target[] => [...targets, ...reported.values()].filter((t) => leases.owns(t.backend.name));
  /**
   * What the other replicas say of the backends they probe, from their events and heartbeats (which
   * carry everything): fresh, and gone once they stop saying it (3 heartbeats), unlike KV's last change.
   */
  const heard = new Map<string, { event: HealthEvent; at: number }>();
  const others = nc.subscribe(subjects.healthEventsAll(), {
    callback: (_err, msg) => {
      const parsed = HealthEventSchema.safeParse(parseJsonOrUndefined(msg.data));
      if (!parsed.success || parsed.data.proberId === deps.workerId) return;
      const e = parsed.data;
      heard.set(`${e.backend}/${e.endpoint}/${e.caller ?? ""}`, { event: e, at: Date.now() });
    },
  });
  // Until the first heartbeats, what KV last stored (it expires the same way if nobody repeats it).
  if (kv) {
    try {
      for await (const key of await kv.keys()) {
        const entry = await kv.get(key);
        const parsed = entry && entry.length > 0 ? HealthEventSchema.safeParse(entry.json()) : undefined;
        if (parsed?.success) heard.set(`${parsed.data.backend}/${parsed.data.endpoint}/${parsed.data.caller ?? ""}`, { event: parsed.data, at: Date.now() });
      }
    } catch {
      // Nothing stored yet.
    }
  }
  /** The table: what this replica probes, and what it heard of the rest. */
  const table = async (): Promise<HealthEvent[]> => {
    const now = Date.now();
    const rest: HealthEvent[] = [];
    for (const [key, { event, at }] of heard) {
      if (now - at > 3 * options.heartbeatMs) heard.delete(key);
      else if (!leases.owns(event.backend)) rest.push(event);
    }
    return [...owned().map((t) => eventOf(t, false)), ...rest];
  };
  service.addEndpoint("get", {
    subject: subjects.healthGet(),
    queue: queueGroups.healthProber(),
    handler: (_err, msg: Msg) =>
      void table()
        .then((endpoints) => respondJson(msg, { ok: true, endpoints } satisfies HealthTableReply, maxPayloadOf(nc)))
        .catch((err: unknown) => answerInternal(msg, "health prober", err, maxPayloadOf(nc))),
  });
  await nc.flush();

  // First probes spread over the first interval, so many endpoints are not probed in one burst.
  targets.forEach((t, i) => schedule(t, Math.floor((t.backend.health.intervalMs * i) / Math.max(1, targets.length))));
  const heartbeat = setInterval(() => {
    forgetSilentCallers();
    for (const t of owned()) publish(t, eventOf(t, false));
  }, options.heartbeatMs);
  heartbeat.unref();
  log.info({ endpoints: targets.map((t) => t.id) }, "health prober started");

  return {
    name: "health-prober",
    table,
    notReady: () => [],
    ...stopOnce(async () => {
      stopping = true;
      await leases.stop();
      clearInterval(heartbeat);
      reports.unsubscribe();
      others.unsubscribe();
      for (const t of targets) clearTimeout(t.timer);
      await service.stop();
      await Promise.allSettled(targets.map((t) => t.probing));
      await Promise.allSettled(targets.map((t) => t.probe?.close()));
      log.info("health prober stopped");
    }),
  };
}

/** The first port of the range (the current one first) where the expected MCP server answers. */
async function scan(
  probe: HttpProbe,
  current: number,
  range: { portFrom: number; portTo: number },
  expected: string,
  timeoutMs: number,
): Promise<number | undefined> {
  const ports = [current, ...Array.from({ length: range.portTo - range.portFrom + 1 }, (_, i) => range.portFrom + i).filter((p) => p !== current)];
  for (const port of ports) if ((await probe.identify(port, timeoutMs)) === expected) return port;
  return undefined;
}
