import type { Msg } from "nats";
import { checkToolCall } from "@toolbus/tool-index";
import type { BackendConfig, ToolbusConfig } from "@toolbus/config";
import type { BreakerState, BreakerTransition } from "@toolbus/policies";
import {
  EndpointMovedSchema,
  ErrorCode,
  HealthEventSchema,
  ToolCallRequestSchema,
  decodeToolsListRequest,
  encodeJson,
  errorReply,
  kvBuckets,
  monotonicNow,
  queueGroups,
  subjects,
  type BreakerEvent,
  type HealthReport,
  type ErrorReply,
  type ToolCallOkReply,
  type ToolDescriptor,
  type ToolsListOkReply,
} from "@toolbus/protocol";
import {
  InFlight,
  TOOLBUS_VERSION,
  addService,
  admitRequest,
  answerInternal,
  maxPayloadOf,
  respondJson,
  type Logger,
  type Worker,
  type WorkerDeps,
} from "@toolbus/runtime";
import { classify } from "@toolbus/mcp-http";
import { CallRegistry } from "./cancellation.js";
import type { Endpoint, EndpointEvents } from "./endpoint.js";
import { HttpEndpoint } from "./http.js";
import { LaunchedServer } from "./launched.js";
import { CallPolicy, REPLY_MARGIN_MS } from "./policy.js";
import { Presence } from "./presence.js";
import { StdioEndpoint } from "./stdio.js";
import { ToolList } from "./tool-list.js";

/**
 * An HTTP backend's response may be this much larger than the NATS max payload (the JSON-RPC and SSE
 * framing around a result that still fits a reply); anything larger could not be answered anyway.
 */
const RESPONSE_ENVELOPE_BYTES = 16 * 1024;

export interface CallerOptions {
  backend: BackendConfig;
  limits: ToolbusConfig["limits"];
  heartbeatMs: number;
}

export interface CallerWorker extends Worker {
  readonly backend: string;
  readonly endpoints: readonly Endpoint[];
  /** The backend's tools, once fetched. */
  tools(): readonly ToolDescriptor[] | null;
  /** The breaker state of each endpoint, by endpoint id. */
  breakerStates(): Record<string, BreakerState>;
}

/**
 * The caller of one backend. Serves `toolbus.v1.backend.<b>.call` and `.tools` in queue group
 * `caller.<b>`, holds the backend's connections (a stdio pool or an HTTP session), and answers each
 * call to the client's reply subject itself.
 */
export async function startCaller(deps: WorkerDeps, options: CallerOptions): Promise<CallerWorker> {
  const { nc } = deps;
  const backend = options.backend;
  const log = deps.logger.child({ worker: "caller", backend: backend.name, workerId: deps.workerId });
  const inFlight = new InFlight();
  /** Every call held, with its own signal: aborted at its deadline, on a client's cancel, or by a stop out of grace. */
  const calls = new CallRegistry();

  /** Endpoints that have connected at least once: one still starting is not reported down. */
  const started = new Set<Endpoint>();
  const events: EndpointEvents = {
    onLive: (endpoint) => {
      started.add(endpoint);
      void tools.refresh(endpoint);
    },
    onToolsChanged: (endpoint) => {
      log.info({ endpoint: endpoint.id }, "backend tool list changed; refreshing");
      void tools.refresh(endpoint);
    },
  };
  const launched = backend.kind === "mcp-http" && backend.launch ? new LaunchedServer(backend.launch, log, backend.name) : undefined;
  const maxResponseBytes = maxPayloadOf(nc) + RESPONSE_ENVELOPE_BYTES;
  // Ids go into logs, events, replies and `toolbus status`: never a URL, which may hold a token.
  const endpoints: Endpoint[] =
    backend.kind === "mcp-stdio"
      ? Array.from({ length: backend.pool }, (_, i) => new StdioEndpoint(`${backend.name}#${i}`, backend, maxResponseBytes, log, events))
      : backend.urls.map((url, i) => new HttpEndpoint(`${backend.name}#${i}`, backend, url, maxResponseBytes, log, events));
  const tools = new ToolList(endpoints, log, () => presence.announce());
  const policy = new CallPolicy(backend, endpoints, { onBreaker: (endpoint, t) => breakerEvent(deps, log, backend.name, endpoint, t) });

  const presence = new Presence(nc, {
    backend: backend.name,
    heartbeatMs: options.heartbeatMs,
    maxRequestBytes: options.limits.maxRequestBytes,
    heartbeat: (status) => ({
      backend: backend.name,
      workerId: deps.workerId,
      status,
      toolsVersion: tools.index?.version ?? null,
      endpointsLive: endpoints.filter((e) => e.live).length,
      endpointsTotal: endpoints.length,
      intervalMs: options.heartbeatMs,
    }),
    status: () => ({
      backend: backend.name,
      workerId: deps.workerId,
      toolsVersion: tools.index?.version ?? null,
      endpoints: endpoints.map((e) => ({
        id: e.id,
        live: e.live,
        inFlight: e.inFlight,
        queued: policy.bulkheads.get(e)!.queued,
        breaker: policy.breakers.get(e)!.state,
      })),
    }),
    // Health is what the callers' breakers share: an endpoint the prober finds unhealthy is refused at
    // once (no call has to fail on it first); one found healthy again gets a probe call at once.
    // Changes only: a heartbeat repeats a state the breakers already heard, and must not cut short a
    // recovery time that failed calls started.
    onHealth: (event) => {
      // A stdio child's health concerns only the caller replica that owns it.
      if (!event.change || (event.caller !== undefined && event.caller !== deps.workerId)) return;
      const endpoint = endpoints.find((e) => e.id === event.endpoint);
      const breaker = endpoint && policy.breakers.get(endpoint);
      if (!endpoint || !breaker) return;
      if (event.state === "unhealthy" || event.state === "lost") {
        breaker.open(`health prober: ${event.state} (${event.reason})`);
      } else if ((event.state === "healthy" || event.state === "degraded") && breaker.state === "open") {
        breaker.halfOpen(`health prober: ${event.state} (${event.reason})`);
        // It is back: reconnect now rather than when the backoff says.
        endpoint.wake();
      }
    },
    onMoved: (moved) => {
      const endpoint = endpoints.find((e) => e.id === moved.endpoint);
      if (!(endpoint instanceof HttpEndpoint) || !movable(moved.newPort)) return;
      // The prober has just seen the server answer `initialize` there: the next call may probe it now.
      policy.breakers.get(endpoint)!.halfOpen(`moved to port ${moved.newPort} (health prober)`);
      endpoint.moveTo(moved.newPort);
    },
    onCancel: ({ requestId, reason }) => {
      if (calls.cancel(requestId, `cancelled by the client: ${reason ?? "no reason given"}`) > 0) log.info({ requestId }, "call cancelled by the client");
    },
  });

  const maxPayload = (): number => maxPayloadOf(nc);
  const finish = replyAndCount(deps, backend.name, maxPayload);

  async function handleCall(msg: Msg): Promise<void> {
    const started = monotonicNow();
    const admitted = admitRequest(msg, ToolCallRequestSchema, options.limits, started);
    if (!admitted.ok) return finish(msg, admitted.reply, started);
    const request = admitted.body;
    if (request.backend !== backend.name) {
      return finish(msg, errorReply(ErrorCode.BAD_REQUEST, `this subject serves backend "${backend.name}", the body names "${request.backend}"`), started);
    }
    // Until the tool list is known (backend down since start) calls go on unchecked: the backend checks.
    const index = tools.index;
    if (index) {
      const problem = checkToolCall(index, request);
      if (problem) return finish(msg, problem, started);
    }
    const controller = calls.start(admitted.requestId, admitted.deadline - monotonicNow() - REPLY_MARGIN_MS);
    try {
      const reply = await policy.execute(request, admitted.deadline, index?.get(request.tool), controller.signal);
      if (!reply.ok) log.warn({ requestId: admitted.requestId, tool: request.tool, code: reply.error.code, err: reply.error.message }, "tool call failed");
      finish(msg, reply, started);
    } finally {
      calls.end(controller);
    }
  }

  /** A bug must not take the caller down, and the client must still hear something if it can. */
  function failed(msg: Msg, err: unknown): void {
    log.error({ err }, "caller handler failed");
    answerInternal(msg, "caller", err, maxPayload());
  }

  /** The tool list from memory (no budget needed: nothing waits on the backend). */
  function handleTools(msg: Msg): void {
    const decoded = decodeToolsListRequest(msg.data, options.limits.maxRequestBytes);
    if (!decoded.ok) return void respondJson(msg, decoded.reply, maxPayload());
    if (decoded.value.backend !== undefined && decoded.value.backend !== backend.name) {
      return void respondJson(msg, errorReply(ErrorCode.BAD_REQUEST, `this subject serves backend "${backend.name}"`), maxPayload());
    }
    const list = tools.index;
    const reply: ToolsListOkReply = { ok: true, backends: [{ name: backend.name, liveCallers: 1, tools: list ? [...list.tools] : null }] };
    respondJson(msg, reply, maxPayload());
  }

  /** A move the prober reports is taken only into the configured range (a stray message cannot send our credentials elsewhere). */
  function movable(port: number): boolean {
    return backend.kind === "mcp-http" && backend.rediscover !== undefined && port >= backend.rediscover.portFrom && port <= backend.rediscover.portTo;
  }

  /**
   * A caller that starts after the prober found an endpoint unhealthy has missed the event: it reads
   * the latest states from KV once (no bucket, no JetStream: nothing to learn).
   */
  async function healthFromKv(): Promise<void> {
    if (backend.kind !== "mcp-http") return;
    // Where endpoints moved (a server the prober found on another port), before their health.
    try {
      const moves = await nc.jetstream().views.kv(kvBuckets.endpoints, { bindOnly: true });
      for (let i = 0; i < endpoints.length; i++) {
        const entry = await moves.get(`${backend.name}.${i}`);
        const parsed = entry && entry.length > 0 ? EndpointMovedSchema.safeParse(entry.json()) : undefined;
        const endpoint = endpoints[i];
        if (parsed?.success && endpoint instanceof HttpEndpoint && movable(parsed.data.newPort)) endpoint.moveTo(parsed.data.newPort);
      }
    } catch {
      // Nothing moved yet.
    }
    try {
      const kv = await nc.jetstream().views.kv(kvBuckets.health, { bindOnly: true });
      for (let i = 0; i < endpoints.length; i++) {
        const entry = await kv.get(`${backend.name}.${i}`);
        const parsed = entry && entry.length > 0 ? HealthEventSchema.safeParse(entry.json()) : undefined;
        if (parsed?.success && (parsed.data.state === "unhealthy" || parsed.data.state === "lost"))
          policy.breakers.get(endpoints[i]!)!.open(`health prober: ${parsed.data.state} (${parsed.data.reason})`);
      }
    } catch {
      // No health state stored yet.
    }
  }

  /**
   * Stdio children are ours alone (the prober must never start a copy of one): on the health interval,
   * ping each through its own connection and report to the prober, which keeps their state as for any
   * endpoint. One round at a time; a child that is down is a failed probe.
   */
  let reporting = false;
  let stoppingReports = false;
  async function reportChildren(): Promise<void> {
    if (reporting || stoppingReports || nc.isClosed()) return;
    reporting = true;
    try {
      await Promise.all(
        endpoints
          .filter((endpoint) => started.has(endpoint))
          .map(async (endpoint) => {
            let report: HealthReport;
            const base = { backend: backend.name, endpoint: endpoint.id, caller: deps.workerId, intervalMs: backend.health.intervalMs };
            try {
              report = { ...base, ok: true, latencyMs: Math.round((await endpoint.ping(backend.health.timeoutMs)) * 1000) / 1000 };
            } catch (err) {
              report = { ...base, ok: false, reason: classify(err, { sessionSent: false }).message };
            }
            // Not once the caller is stopping: its children's pings then fail for no fault of theirs.
            if (stoppingReports || nc.isClosed()) return;
            try {
              nc.publish(subjects.healthReport(backend.name), encodeJson(report));
            } catch {
              // draining: nobody to tell
            }
          }),
      );
    } finally {
      reporting = false;
    }
  }

  // Before the endpoints connect: one that moved is reached where it is now, not where the config says.
  await healthFromKv();
  launched?.start();
  for (const endpoint of endpoints) endpoint.start();

  const service = await addService(nc, {
    name: "toolbus-caller",
    version: TOOLBUS_VERSION,
    description: `toolbus caller for backend ${backend.name}`,
    workerId: deps.workerId,
    metadata: { backend: backend.name, kind: backend.kind },
  });
  const queue = queueGroups.caller(backend.name);
  service.addEndpoint("call", {
    subject: subjects.backendCall(backend.name),
    queue,
    handler: (_err, msg) => inFlight.track(handleCall(msg).catch((err: unknown) => failed(msg, err))),
    metadata: { backend: backend.name },
  });
  service.addEndpoint("tools", { subject: subjects.backendTools(backend.name), queue, handler: (_err, msg) => handleTools(msg) });
  await presence.start();
  const reporter = backend.kind === "mcp-stdio" ? setInterval(() => void reportChildren(), backend.health.intervalMs) : undefined;
  reporter?.unref();
  log.info({ endpoints: endpoints.length, subject: subjects.backendCall(backend.name) }, "caller started");

  let stopped: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stoppedPromise = new Promise<void>((r) => (resolveStopped = r));
  return {
    name: `caller:${backend.name}`,
    backend: backend.name,
    endpoints,
    tools: () => tools.index?.tools ?? null,
    breakerStates: () => Object.fromEntries([...policy.breakers].map(([e, b]) => [e.id, b.state])),
    notReady: () => (endpoints.some((e) => e.live) ? [] : [`caller ${backend.name}: no live backend connection`]),
    stop: (graceMs = 10_000) => {
      stopped ??= (async () => {
        stoppingReports = true;
        clearInterval(reporter);
        presence.stop();
        // Drain: messages already delivered to us are still handled; no new ones arrive.
        await service.stop();
        if (!(await inFlight.idle(graceMs))) {
          log.warn({ inFlight: inFlight.count }, "grace period over; cancelling the calls still in flight");
          calls.abortAll("the caller stopped before the backend answered (grace period over)");
          // Let the cancelled calls send their answers before the connection drains.
          await inFlight.idle(1_000);
        }
        presence.stopCancels();
        policy.close();
        await Promise.allSettled(endpoints.map((e) => e.close()));
        await launched?.stop();
        log.info("caller stopped");
        resolveStopped();
      })();
      return stopped;
    },
    stopped: stoppedPromise,
  };
}

/** Log a breaker transition and publish it on `toolbus.v1.evt.breaker.<backend>`. */
function breakerEvent(deps: WorkerDeps, log: Logger, backend: string, endpoint: Endpoint, t: BreakerTransition): void {
  const event: BreakerEvent = {
    backend,
    endpoint: endpoint.id,
    from: t.from,
    to: t.to,
    reason: t.reason,
    workerId: deps.workerId,
    time: new Date().toISOString(),
  };
  (t.to === "open" ? log.warn : log.info).call(log, event, `breaker ${t.from} → ${t.to}`);
  if (!deps.nc.isClosed()) deps.nc.publish(subjects.breakerEvents(backend), encodeJson(event));
}

/** Send a reply and count it in the metrics, by outcome. */
function replyAndCount(deps: WorkerDeps, backend: string, maxPayload: () => number): (msg: Msg, reply: ToolCallOkReply | ErrorReply, started: number) => void {
  const { metrics } = deps;
  // Label lookups bound once: prom-client hashes label sets on every unbound call.
  const okCount = metrics.requests.labels("caller", backend, "ok");
  const okDuration = metrics.duration.labels("caller", backend, "ok");
  return (msg, reply, started) => {
    respondJson(msg, reply, maxPayload());
    const seconds = (monotonicNow() - started) / 1000;
    if (reply.ok) {
      okCount.inc();
      okDuration.observe(seconds);
    } else {
      const labels = { worker: "caller", backend, outcome: reply.error.code };
      metrics.requests.inc(labels);
      metrics.duration.observe(labels, seconds);
    }
  };
}
