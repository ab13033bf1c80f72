import type { Msg } from "nats";
import { checkToolCall } from "@toolbus/tool-index";
import { cacheRule, isLlmBackend, type BackendConfig, type CacheConfig, type ChatLogConfig, type ToolbusConfig } from "@toolbus/config";
import type { BreakerState } from "@toolbus/policies";
import {
  ChatEventType,
  ErrorCode,
  Headers,
  McpForwardRequestSchema,
  ToolCallRequestSchema,
  decodeToolsListRequest,
  encodeJson,
  errorReply,
  monotonicNow,
  queueGroups,
  subjects,
  type BackendChanged,
  type CacheSetHead,
  type ErrorReply,
  type ToolCallOkReply,
  type ToolDescriptor,
  type ToolProgress,
  type ToolsListOkReply,
} from "@toolbus/protocol";
import {
  InFlight,
  TOOLBUS_VERSION,
  addService,
  admitRequest,
  ChatEmitter,
  answerInternal,
  cacheKeyFor,
  ensureChatStreams,
  maxPayloadOf,
  respondJson,
  stopOnce,
  type Worker,
  type WorkerDeps,
} from "@toolbus/runtime";
import { CallRegistry } from "./cancellation.js";
import { CallerHealth } from "./health.js";
import type { Endpoint, EndpointEvents } from "./endpoint.js";
import { LaunchedServer } from "./launched.js";
import { CallPolicy } from "./policy.js";
import { Presence } from "./presence.js";
import { REPLY_MARGIN_MS, breakerEvent, breakersClosed, leastBusy } from "./shared.js";
import { classify, faultReply } from "@toolbus/mcp-http";
import { SingleFlight, type CallReply } from "./single-flight.js";
import { StdioEndpoint } from "./stdio.js";
import { ToolList } from "./tool-list.js";

/**
 * An HTTP backend's response may be this much larger than the NATS max payload (the JSON-RPC and SSE
 * framing around a result that still fits a reply); anything larger could not be answered anyway.
 */
const RESPONSE_ENVELOPE_BYTES = 16 * 1024;

export interface CallerOptions {
  /** An MCP backend (an LLM backend has its own caller: startLlmCaller). */
  backend: BackendConfig;
  limits: ToolbusConfig["limits"];
  heartbeatMs: number;
  /** Which calls share a flight and are offered to the cache; without it, none. */
  cache?: CacheConfig;
  /** The chat stream's settings: the caller creates it at start if it is missing (it logs calls that name a conversation). */
  chatLog?: ChatLogConfig;
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
  if (isLlmBackend(backend)) throw new TypeError(`backend "${backend.name}" is an LLM backend: start it with startLlmCaller`);
  const log = deps.logger.child({ worker: "caller", backend: backend.name, workerId: deps.workerId });
  const inFlight = new InFlight();
  /** Every call held, with its own signal: aborted at its deadline, on a client's cancel, or by a stop out of grace. */
  const calls = new CallRegistry();

  /** Endpoints that have been live once: live again means a new process or session, whose results may differ. */
  const connectedBefore = new Set<Endpoint>();
  const events: EndpointEvents = {
    onLive: (endpoint) => {
      health.connected(endpoint);
      void tools.refresh(endpoint);
      if (connectedBefore.has(endpoint)) changed(endpoint, "restarted");
      connectedBefore.add(endpoint);
    },
    onToolsChanged: (endpoint) => {
      log.info({ endpoint: endpoint.id }, "backend tool list changed; refreshing");
      changed(endpoint, "tools");
      // Once more when the new list is in: a call made meanwhile was judged by the old one (a tool that
      // lost readOnlyHint may have been stored).
      void tools.refresh(endpoint).then(() => changed(endpoint, "tools"));
    },
    onResourcesChanged: (endpoint, uri) => changed(endpoint, "resources", uri),
  };

  /** Tell the cache that results of this backend may be stale (BackendChanged). */
  function changed(endpoint: Endpoint, what: BackendChanged["what"], uri?: string): void {
    const event: BackendChanged = {
      backend: backend.name,
      endpoint: endpoint.id,
      what,
      workerId: deps.workerId,
      time: new Date().toISOString(),
      ...(uri !== undefined ? { uri } : {}),
    };
    if (!nc.isClosed()) nc.publish(subjects.backendChanged(backend.name), encodeJson(event));
  }
  const launched = backend.kind === "mcp-http" && backend.launch ? new LaunchedServer(backend.launch, log, backend.name) : undefined;
  const maxResponseBytes = maxPayloadOf(nc) + RESPONSE_ENVELOPE_BYTES;
  // Ids go into logs, events, replies and `toolbus status`: never a URL, which may hold a token.
  // The HTTP endpoint (and undici under it) is loaded only for an HTTP backend.
  const HttpEndpoint = backend.kind === "mcp-http" ? (await import("./http.js")).HttpEndpoint : undefined;
  const endpoints: Endpoint[] =
    backend.kind === "mcp-stdio"
      ? Array.from({ length: backend.pool }, (_, i) => new StdioEndpoint(`${backend.name}#${i}`, backend, maxResponseBytes, log, events))
      : backend.urls.map((url, i) => new HttpEndpoint!(`${backend.name}#${i}`, backend, url, maxResponseBytes, log, events));
  const tools = new ToolList(endpoints, log, () => presence.announce());
  const policy = new CallPolicy(backend, endpoints, { onBreaker: (endpoint, t) => breakerEvent(deps, log, backend.name, endpoint, t) });
  breakersClosed(deps, backend.name, endpoints);
  const health = new CallerHealth(nc, backend, endpoints, policy.breakers, deps.workerId);

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
    onHealth: (event) => health.onHealth(event),
    onMoved: (moved) => health.onMoved(moved),
    onCancel: ({ requestId, reason }) => {
      if (calls.cancel(requestId, `cancelled by the client: ${reason ?? "no reason given"}`) > 0) log.info({ requestId }, "call cancelled by the client");
    },
  });

  const maxPayload = (): number => maxPayloadOf(nc);
  const finish = replyAndCount(deps, backend.name, maxPayload, (tool) => tools.index?.has(tool) ?? false);
  const cacheSettings = options.cache?.enabled ? options.cache : undefined;
  const flights = new SingleFlight();
  const chat = new ChatEmitter(nc, log, deps.metrics, { worker: "caller", workerId: deps.workerId, backend: backend.name });
  const joins = deps.metrics.singleFlightJoins.labels(backend.name);

  async function handleCall(msg: Msg): Promise<void> {
    const started = monotonicNow();
    const admitted = admitRequest(msg, ToolCallRequestSchema, options.limits, started);
    if (!admitted.ok) return finish(msg, admitted.reply, started);
    const request = admitted.body;
    if (request.backend !== backend.name) {
      return finish(msg, errorReply(ErrorCode.BAD_REQUEST, `this subject serves backend "${backend.name}", the body names "${request.backend}"`), started);
    }
    // A call that names a conversation is logged in it: what was asked, then what came of it.
    const conversationId = request.conversationId;
    const answer = (reply: CallReply): void => {
      finish(msg, reply, started, request.tool);
      if (conversationId) chat.emit(conversationId, ...outcomeEvent(request.tool, admitted.requestId, reply));
    };
    if (conversationId)
      chat.emit(conversationId, ChatEventType.tool_call, {
        backend: backend.name,
        tool: request.tool,
        arguments: request.arguments,
        requestId: admitted.requestId,
      });
    // Until the tool list is known (backend down since start) calls go on unchecked: the backend checks.
    const index = tools.index;
    if (index) {
      const problem = checkToolCall(index, request);
      if (problem) return answer(problem);
    }
    const controller = calls.start(admitted.requestId, admitted.deadline - monotonicNow() - REPLY_MARGIN_MS);
    try {
      const descriptor = index?.get(request.tool);
      const call = (): Promise<CallReply> => policy.execute(request, admitted.deadline, descriptor, controller.signal, progressRelay(msg));
      const rule = cacheSettings && request.cache !== "bypass" ? cacheRule(cacheSettings, backend, request.tool, descriptor) : undefined;
      const key = rule && cacheKeyFor(request, rule, msg.headers);
      let reply: CallReply;
      if (key === undefined) {
        reply = await call();
      } else {
        const shared = await flights.run(key, controller.signal, call, () => joins.inc());
        reply = shared.reply;
        // The leader offers the result to the cache, if the call came through it under this very key.
        if (shared.led && msg.headers?.get(Headers.CacheKey) === key) offer(key, request.tool, rule!.ttlMs, reply, started);
      }
      if (!reply.ok) log.warn({ requestId: admitted.requestId, tool: request.tool, code: reply.error.code, err: reply.error.message }, "tool call failed");
      answer(reply);
    } finally {
      calls.end(controller);
    }
  }

  /**
   * Offer a result to the cache (fire and forget): never a tool error, never one over the size cap.
   * The message is a head line and the result's JSON, which the cache stores without parsing.
   */
  function offer(key: string, tool: string, ttlMs: number, reply: CallReply, started: number): void {
    if (!reply.ok || reply.result.isError === true) return;
    const result = JSON.stringify(reply.result);
    if (Buffer.byteLength(result) > cacheSettings!.maxValueBytes) return;
    const head: CacheSetHead = { key, backend: backend.name, tool, endpoint: reply.meta.endpoint, ttlMs, ageMs: monotonicNow() - started };
    try {
      nc.publish(subjects.cacheSet(), `${JSON.stringify(head)}\n${result}`);
    } catch (err) {
      log.debug({ err: (err as Error).message }, "could not offer a result to the cache");
    }
  }

  /** The backend's progress, published where the call asked for it (header Toolbus-Progress-To), if it did. */
  function progressRelay(msg: Msg): ((progress: ToolProgress) => void) | undefined {
    const to = msg.headers?.get(Headers.ProgressTo);
    if (!to) return undefined;
    return (progress) => {
      try {
        nc.publish(to, encodeJson(progress));
      } catch (err) {
        log.debug({ err: (err as Error).message }, "could not relay progress");
      }
    };
  }

  let rotation = 0;
  /** An MCP request besides tools (resources, prompts), passed to a live endpoint as it is. */
  async function handleMcp(msg: Msg): Promise<void> {
    const admitted = admitRequest(msg, McpForwardRequestSchema, options.limits, monotonicNow());
    if (!admitted.ok) return void respondJson(msg, admitted.reply, maxPayload());
    const { method, params } = admitted.body;
    if (admitted.body.backend !== backend.name) {
      return void respondJson(msg, errorReply(ErrorCode.BAD_REQUEST, `this subject serves backend "${backend.name}"`), maxPayload());
    }
    const endpoint = leastBusy(endpoints, rotation++, (e) => e.live && !policy.breakers.get(e)!.rejecting, undefined);
    if (!endpoint) return void respondJson(msg, errorReply(ErrorCode.BACKEND_UNAVAILABLE, `no live endpoint of backend "${backend.name}"`), maxPayload());
    const left = admitted.deadline - monotonicNow() - REPLY_MARGIN_MS;
    const controller = calls.start(admitted.requestId, left);
    try {
      const result = await endpoint.request(method, params, Math.max(1, Math.floor(left)), controller.signal);
      respondJson(msg, { ok: true, result }, maxPayload());
    } catch (err) {
      respondJson(msg, faultReply(classify(controller.signal.aborted ? controller.signal.reason : err, { sessionSent: false }), endpoint.id), maxPayload());
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

  // Before the endpoints connect: one that moved is reached where it is now, not where the config says.
  await health.fromKv();
  if (options.chatLog)
    await ensureChatStreams(nc, options.chatLog, log, deps.streamReplicas ?? 1).catch((err: unknown) =>
      log.debug({ err: (err as Error).message }, "no chat stream (is JetStream enabled?); calls that name a conversation are not logged"),
    );
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
  const serveCall = (msg: Msg): void => inFlight.track(handleCall(msg).catch((err: unknown) => failed(msg, err)));
  service.addEndpoint("call", {
    subject: subjects.backendCall(backend.name),
    queue,
    handler: (_err, msg) => serveCall(msg),
    metadata: { backend: backend.name },
  });
  // Calls from a front door in this process come straight here (LocalRoutes), counted in flight the same.
  const withdrawLocal = deps.local?.serve(subjects.backendCall(backend.name), serveCall);
  service.addEndpoint("tools", { subject: subjects.backendTools(backend.name), queue, handler: (_err, msg) => handleTools(msg) });
  service.addEndpoint("mcp", {
    subject: subjects.backendMcp(backend.name),
    queue,
    handler: (_err, msg) => inFlight.track(handleMcp(msg).catch((err: unknown) => failed(msg, err))),
  });
  await presence.start();
  health.startReports();
  log.info({ endpoints: endpoints.length, subject: subjects.backendCall(backend.name) }, "caller started");

  return {
    name: `caller:${backend.name}`,
    backend: backend.name,
    endpoints,
    tools: () => tools.index?.tools ?? null,
    breakerStates: () => Object.fromEntries([...policy.breakers].map(([e, b]) => [e.id, b.state])),
    notReady: () => (endpoints.some((e) => e.live) ? [] : [`caller ${backend.name}: no live backend connection`]),
    ...stopOnce(async (graceMs = 10_000) => {
      health.stop();
      presence.stop();
      withdrawLocal?.();
      // Drain: messages already delivered to us are still handled; no new ones arrive.
      await service.stop();
      if (!(await inFlight.idle(graceMs))) {
        log.warn({ inFlight: inFlight.count }, "grace period over; cancelling the calls still in flight");
        calls.abortAll("the caller stopped before the backend answered (grace period over)");
        // Let the cancelled calls send their answers before the connection drains.
        await inFlight.idle(1_000);
      }
      presence.stopCancels();
      await chat.close();
      policy.close();
      await Promise.allSettled(endpoints.map((e) => e.close()));
      await launched?.stop();
      log.info("caller stopped");
    }),
  };
}

/** Send a reply and count it in the metrics, by outcome, and by tool once the request named one. */
function replyAndCount(
  deps: WorkerDeps,
  backend: string,
  maxPayload: () => number,
  listed: (tool: string) => boolean,
): (msg: Msg, reply: ToolCallOkReply | ErrorReply, started: number, tool?: string) => void {
  const { metrics } = deps;
  // Label lookups bound once: prom-client hashes label sets on every unbound call.
  const okCount = metrics.requests.labels("caller", backend, "ok");
  const okDuration = metrics.duration.labels("caller", backend, "ok");
  // Only the tools the backend lists get a series of their own: bad input cannot grow the label set.
  const toolTimers = new Map<string, { observe(seconds: number): void }>();
  const toolTimer = (tool: string): { observe(seconds: number): void } => {
    const name = listed(tool) ? tool : "other";
    let timer = toolTimers.get(name);
    if (!timer) toolTimers.set(name, (timer = metrics.toolDuration.labels(backend, name)));
    return timer;
  };
  return (msg, reply, started, tool) => {
    respondJson(msg, reply, maxPayload());
    const seconds = (monotonicNow() - started) / 1000;
    if (tool !== undefined) toolTimer(tool).observe(seconds);
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

/** The chat event that ends a logged call: its result, or the error it ended with. */
export function outcomeEvent(tool: string, requestId: string, reply: CallReply): [string, unknown] {
  return reply.ok
    ? [ChatEventType.tool_result, { backend: reply.meta.backend, tool, requestId, result: reply.result, meta: reply.meta }]
    : [ChatEventType.error, { tool, requestId, error: reply.error }];
}
