import type { Msg, MsgHdrs } from "nats";
import { checkToolCall, unknownBackend } from "@toolbus/tool-index";
import { cacheRule, type BackendConfig, type CacheConfig, type LlmBackendConfig, type ToolbusConfig } from "@toolbus/config";
import {
  ErrorCode,
  Headers,
  LlmChatRequestSchema,
  ToolCallRequestSchema,
  decodeToolsListRequest,
  errorReply,
  monotonicNow,
  queueGroups,
  stampBudget,
  subjects,
  type ErrorReply,
  type LlmTried,
  type ToolCallRequest,
  type ToolDescriptor,
  type ToolsListOkReply,
} from "@toolbus/protocol";
import {
  TOOLBUS_VERSION,
  addService,
  admitRequest,
  answerInternal,
  cacheKeyFor,
  maxPayloadOf,
  respondJson,
  stopOnce,
  type Worker,
  type WorkerDeps,
} from "@toolbus/runtime";
import { CacheHandoff } from "./cache-handoff.js";
import { LiveBackends } from "./live-backends.js";

/** How long a starting router collects answers from running callers before it serves. */
const DISCOVERY_WAIT_MS = 250;

export interface RouterOptions {
  /** Backends named in the config (more are learned from caller heartbeats). */
  backends: readonly string[];
  limits: ToolbusConfig["limits"];
  /**
   * What is cacheable: the cache settings and the configured backends (a backend known only from its
   * caller's heartbeat has no cache settings here, so none of its calls is cached). Without it, no call is.
   */
  caching?: { settings: CacheConfig; backends: Readonly<Record<string, BackendConfig>> };
  /** The configured LLM backends, in config order: their models (the model → backend map) and fallback chains. */
  llm?: readonly LlmBackendConfig[];
  /** Per model: a fallback chain that replaces the backend's own. */
  modelFallbacks?: Readonly<Record<string, readonly string[]>>;
}

export interface RouterWorker extends Worker {
  readonly liveBackends: LiveBackends;
  /** The cache replicas this router hands calls to (undefined when caching is off). */
  readonly cache: CacheHandoff | undefined;
}

/**
 * The router: validates a tool call, resolves backend and tool from its catalog, checks the arguments
 * against the tool's schema, and forwards the very message to the backend's callers with the client's
 * reply subject. It never waits for the answer: the caller replies to the client directly.
 */
export async function startRouter(deps: WorkerDeps, options: RouterOptions): Promise<RouterWorker> {
  const { nc, metrics } = deps;
  const log = deps.logger.child({ worker: "router", workerId: deps.workerId });
  const liveBackends = new LiveBackends(nc, log, options.backends);
  const stopListening = liveBackends.listen();
  const caching = options.caching?.settings.enabled ? options.caching : undefined;
  const cache = caching && new CacheHandoff(nc, log, metrics, deps.workerId, caching.settings.handoffTimeoutMs);
  cache?.listen();
  await Promise.all([liveBackends.discover(DISCOVERY_WAIT_MS), cache?.discover(DISCOVERY_WAIT_MS)]);
  const handed = metrics.cacheHandoffs.labels("handed");
  const bypassed = metrics.cacheHandoffs.labels("bypassed");
  const maxPayload = (): number => maxPayloadOf(nc);
  // Label children bound once per backend: prom-client hashes a label set on every unbound call.
  const forwarded = new Map<string, { requests: ReturnType<typeof metrics.requests.labels>; duration: ReturnType<typeof metrics.duration.labels> }>();
  const forwardedMetrics = (backend: string) => {
    let bound = forwarded.get(backend);
    if (!bound) {
      bound = { requests: metrics.requests.labels("router", backend, "forwarded"), duration: metrics.duration.labels("router", backend, "forwarded") };
      forwarded.set(backend, bound);
    }
    return bound;
  };

  // The first backend (in config order) that lists a model serves it.
  const llmBackends = new Map((options.llm ?? []).map((b) => [b.name, b]));
  const modelMap = new Map<string, string>();
  for (const b of options.llm ?? []) for (const model of b.models) if (!modelMap.has(model)) modelMap.set(model, b.name);

  const answer = (msg: Msg, reply: ErrorReply, backend: string, started: number, requestId: string): void => {
    respondJson(msg, reply, maxPayload());
    metrics.requests.inc({ worker: "router", backend, outcome: reply.error.code });
    metrics.duration.observe({ worker: "router", backend, outcome: reply.error.code }, (monotonicNow() - started) / 1000);
    log.debug({ requestId, code: reply.error.code, msg: reply.error.message }, "answered with an error");
  };

  function handleCall(msg: Msg): void {
    const started = monotonicNow();
    const admitted = admitRequest(msg, ToolCallRequestSchema, options.limits, started);
    if (!admitted.ok) return answer(msg, admitted.reply, "-", started, admitted.requestId);
    const { body: request, requestId, deadline } = admitted;
    const backend = request.backend;
    if (!liveBackends.has(backend)) return answer(msg, unknownBackend(backend, liveBackends.names), "-", started, requestId);
    if (llmBackends.has(backend)) {
      const reply = errorReply(ErrorCode.BAD_REQUEST, `backend "${backend}" is an LLM backend: it has no tools; send chats to ${subjects.llmChat()}`);
      return answer(msg, reply, backend, started, requestId);
    }
    if (liveBackends.liveCallers(backend) === 0) {
      const reply = errorReply(
        ErrorCode.BACKEND_UNAVAILABLE,
        `backend "${backend}" has no live caller (start one with: toolbus worker caller --backend ${backend})`,
        {
          details: { backend },
        },
      );
      return answer(msg, reply, backend, started, requestId);
    }
    // A backend whose tools are not known yet is not an "unknown tool": its caller decides.
    const index = liveBackends.index(backend);
    if (index) {
      const problem = checkToolCall(index, request);
      if (problem) return answer(msg, problem, backend, started, requestId);
    }
    const now = monotonicNow();
    if (deadline - now <= 1) return answer(msg, errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed in the router"), backend, started, requestId);
    if (!msg.reply) return;
    // Forward the very message: same body, the client's reply subject, the budget re-stamped.
    const h = msg.headers!;
    h.set(Headers.TimeoutMs, stampBudget(deadline, now));
    h.set(Headers.RequestId, requestId);
    h.set(Headers.ForwardedBy, deps.workerId);
    const key = cache && request.cache !== "bypass" ? cacheKeyOf(request, index?.get(request.tool), h) : undefined;
    if (key !== undefined) {
      if (cache!.accepts(deadline - now, now)) {
        cache!.hand(msg, backend, deadline, key, now);
        handed.inc();
        metrics.requests.inc({ worker: "router", backend, outcome: "to_cache" });
        return;
      }
      bypassed.inc();
    }
    nc.publish(subjects.backendCall(backend), msg.data, { reply: msg.reply, headers: h });
    const counted = forwardedMetrics(backend);
    counted.requests.inc();
    counted.duration.observe((monotonicNow() - started) / 1000);
  }

  /** The cache key of a call the cache may answer, or undefined (not cacheable, or a header it varies by is missing). */
  function cacheKeyOf(request: ToolCallRequest, tool: ToolDescriptor | undefined, h: MsgHdrs): string | undefined {
    const backend = caching!.backends[request.backend];
    const rule = backend && cacheRule(caching!.settings, backend, request.tool, tool);
    return rule ? cacheKeyFor(request, rule, h) : undefined;
  }

  /**
   * An LLM chat: pick the backend (named, or by model), add its fallback chain, skip the backends with
   * no live caller, and forward the very message to the first. Whichever caller answers, answers the client.
   */
  function handleChat(msg: Msg): void {
    const started = monotonicNow();
    const admitted = admitRequest(msg, LlmChatRequestSchema, options.limits, started);
    if (!admitted.ok) return answer(msg, admitted.reply, "-", started, admitted.requestId);
    const { body: request, requestId, deadline } = admitted;
    const primary = request.backend ?? modelMap.get(request.model!);
    if (primary === undefined) {
      const models = [...modelMap.keys()];
      const reply = errorReply(
        ErrorCode.UNKNOWN_BACKEND,
        `no backend serves model "${request.model}"; configured models: ${models.join(", ") || "none"} (or name a backend)`,
        { details: { model: request.model, models } },
      );
      return answer(msg, reply, "-", started, requestId);
    }
    if (!liveBackends.has(primary)) return answer(msg, unknownBackend(primary, liveBackends.names), "-", started, requestId);
    if (options.caching?.backends[primary] && !llmBackends.has(primary)) {
      const reply = errorReply(ErrorCode.BAD_REQUEST, `backend "${primary}" is an MCP backend, not an LLM: call its tools on ${subjects.toolCall()}`);
      return answer(msg, reply, primary, started, requestId);
    }
    // A model's own chain, when the request named a model (not a backend) and the config has one for it.
    const modelChain = request.backend === undefined ? options.modelFallbacks?.[request.model!] : undefined;
    const chain = [primary, ...(modelChain ?? llmBackends.get(primary)?.fallbacks ?? [])].filter((b, i, all) => all.indexOf(b) === i);
    const first = chain.findIndex((b) => liveBackends.liveCallers(b) > 0);
    const skipped: LlmTried[] = chain
      .slice(0, first === -1 ? chain.length : first)
      .map((b) => ({ backend: b, code: ErrorCode.BACKEND_UNAVAILABLE, message: `backend "${b}" has no live caller` }));
    if (first === -1) {
      const reply = errorReply(ErrorCode.BACKEND_UNAVAILABLE, `no live caller for backend "${primary}"${chain.length > 1 ? " or any of its fallbacks" : ""}`, {
        details: { backend: primary, tried: skipped },
      });
      return answer(msg, reply, primary, started, requestId);
    }
    const now = monotonicNow();
    if (deadline - now <= 1) return answer(msg, errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed in the router"), primary, started, requestId);
    if (!msg.reply) return;
    const target = chain[first]!;
    const rest = chain.slice(first + 1).filter((b) => liveBackends.liveCallers(b) > 0);
    const h = msg.headers!;
    h.set(Headers.TimeoutMs, stampBudget(deadline, now));
    h.set(Headers.RequestId, requestId);
    h.set(Headers.ForwardedBy, deps.workerId);
    // Only the router sets the chain: whatever a client put there is replaced.
    if (rest.length > 0) h.set(Headers.Fallbacks, rest.join(","));
    else h.delete(Headers.Fallbacks);
    if (skipped.length > 0) h.set(Headers.Tried, JSON.stringify(skipped));
    else h.delete(Headers.Tried);
    nc.publish(subjects.backendChat(target), msg.data, { reply: msg.reply, headers: h });
    metrics.requests.inc({ worker: "router", backend: target, outcome: "forwarded" });
    metrics.duration.observe({ worker: "router", backend: target, outcome: "forwarded" }, (monotonicNow() - started) / 1000);
  }

  function handleList(msg: Msg): void {
    const decoded = decodeToolsListRequest(msg.data, options.limits.maxRequestBytes);
    if (!decoded.ok) return void respondJson(msg, decoded.reply, maxPayload());
    const requested = decoded.value.backend;
    if (requested !== undefined && !liveBackends.has(requested)) return void respondJson(msg, unknownBackend(requested, liveBackends.names), maxPayload());
    const names = requested !== undefined ? [requested] : liveBackends.names;
    const reply: ToolsListOkReply = { ok: true, backends: names.map((n) => liveBackends.describe(n)) };
    respondJson(msg, reply, maxPayload());
  }

  const service = await addService(nc, {
    name: "toolbus-router",
    version: TOOLBUS_VERSION,
    description: "toolbus router: validates and forwards tool calls to backend callers",
    workerId: deps.workerId,
  });
  const queue = queueGroups.router();
  const guard = (fn: (msg: Msg) => void) => (_err: unknown, msg: Msg) => {
    try {
      fn(msg);
    } catch (err) {
      // A bug must not take the router down, and the client must still hear something.
      log.error({ err }, "router handler failed");
      answerInternal(msg, "router", err, maxPayload());
    }
  };
  service.addEndpoint("call", { subject: subjects.toolCall(), queue, handler: guard(handleCall) });
  service.addEndpoint("list", { subject: subjects.toolsList(), queue, handler: guard(handleList) });
  service.addEndpoint("chat", { subject: subjects.llmChat(), queue, handler: guard(handleChat) });
  await nc.flush();
  log.info({ backends: options.backends }, "router started");

  return {
    name: "router",
    liveBackends,
    cache,
    notReady: () => [],
    // Forwarding is synchronous, so once the endpoints are drained nothing is left in flight here.
    ...stopOnce(async () => {
      await service.stop();
      await cache?.stop();
      await stopListening();
      log.info("router stopped");
    }),
  };
}
