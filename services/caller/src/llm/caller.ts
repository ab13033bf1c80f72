import { createInbox, type Msg, type NatsConnection } from "nats";
import type { ChatLogConfig, LlmBackendConfig, ToolbusConfig } from "@toolbus/config";
import type { BreakerState } from "@toolbus/policies";
import {
  CallerHeartbeatSchema,
  ChatEventType,
  Headers,
  LlmChatRequestSchema,
  LlmTriedSchema,
  LlmUsageShareSchema,
  encodeJson,
  monotonicNow,
  parseJsonOrUndefined,
  queueGroups,
  stampBudget,
  subjects,
  type ErrorReply,
  type LlmChatReply,
  type LlmDelta,
  type LlmStreamChunk,
  type LlmTried,
  type LlmUsageShare,
} from "@toolbus/protocol";
import {
  ChatEmitter,
  InFlight,
  TOOLBUS_VERSION,
  addService,
  admitRequest,
  answerInternal,
  chatStamp,
  ensureChatStreams,
  maxPayloadOf,
  respondJson,
  stopOnce,
  type Logger,
  type Worker,
  type WorkerDeps,
} from "@toolbus/runtime";
import { CallRegistry } from "../cancellation.js";
import { LaunchedServer } from "../launched.js";
import { Presence } from "../presence.js";
import { REPLY_MARGIN_MS, breakerEvent, breakersClosed } from "../shared.js";
import { LlmEndpoint } from "./endpoint.js";
import { LlmPolicy, type LlmOutcome } from "./policy.js";
import { providerOf } from "./providers.js";

/** A fallback is worth forwarding to only with at least this much budget left. */
const MIN_FALLBACK_BUDGET_MS = 20;
/** How long a reply may wait for its chat event to be stored (then it goes anyway; the event follows). */
const CHAT_SETTLE_MS = 100;

export interface LlmCallerOptions {
  backend: LlmBackendConfig;
  limits: ToolbusConfig["limits"];
  heartbeatMs: number;
  chatLog?: ChatLogConfig;
}

export interface LlmCallerWorker extends Worker {
  readonly backend: string;
  readonly endpoints: readonly LlmEndpoint[];
  breakerStates(): Record<string, BreakerState>;
  /** Requests sent and connections opened, per endpoint (connection reuse = 1 − opened / requests). */
  connectionStats(): Array<{ id: string; requests: number; connectionsOpened: number }>;
}

/**
 * The caller of one LLM backend. Serves `toolbus.v1.backend.<b>.chat` in queue group `caller.<b>`:
 * translates the request to the provider's API, calls it under the backend's policies, and answers the
 * client's inbox itself: one reply, or numbered chunks and a final message for a stream. When it cannot
 * answer before the first chunk and the request carries a fallback chain (`Toolbus-Fallbacks`), it
 * forwards the very message to the next backend instead, saying what it tried (`Toolbus-Tried`).
 */
export async function startLlmCaller(deps: WorkerDeps, options: LlmCallerOptions): Promise<LlmCallerWorker> {
  const { nc, metrics } = deps;
  const backend = options.backend;
  const log = deps.logger.child({ worker: "caller", backend: backend.name, workerId: deps.workerId });
  const provider = providerOf(backend.kind);
  const providerName = backend.kind === "llm-openai" ? "openai" : "anthropic";
  const inFlight = new InFlight();
  const calls = new CallRegistry();
  const maxPayload = (): number => maxPayloadOf(nc);
  // The key is revealed here, into the one header that carries it (and the endpoint's redaction of
  // error messages), and nowhere else.
  const apiKey = backend.apiKey?.reveal();
  const headers = { ...backend.headers, ...provider.headers(apiKey) };
  const endpoints = backend.urls.map(
    (url, i) =>
      new LlmEndpoint(`${backend.name}#${i}`, url, provider, headers, {
        ...(apiKey !== undefined ? { secret: apiKey } : {}),
        connections: backend.connections,
        connectTimeoutMs: backend.connectTimeoutMs,
        // An answer we could not send on anyway (NATS max payload) is not worth reading whole; the
        // margin is the provider's JSON around the text.
        maxResponseBytes: 4 * maxPayload() + 64 * 1024,
      }),
  );
  const share = (requests: number, tokens: number): void => {
    const usage: LlmUsageShare = { workerId: deps.workerId, requests, tokens };
    if (!nc.isClosed()) nc.publish(subjects.llmUsage(backend.name), encodeJson(usage));
  };
  const policy = new LlmPolicy(backend, endpoints, provider, (endpoint, t) => breakerEvent(deps, log, backend.name, endpoint, t), undefined, share);
  breakersClosed(deps, backend.name, endpoints);
  // The rate limits hold for the backend, not per replica: every replica charges what the others used.
  const usages = nc.subscribe(subjects.llmUsage(backend.name), {
    callback: (_err, msg) => {
      const parsed = LlmUsageShareSchema.safeParse(parseJsonOrUndefined(msg.data));
      if (parsed.success && parsed.data.workerId !== deps.workerId) policy.peerUsed(parsed.data.requests, parsed.data.tokens);
    },
  });
  const chat = new ChatEmitter(nc, log, metrics, { worker: "caller", workerId: deps.workerId, backend: backend.name });
  const launched = backend.launch ? new LaunchedServer(backend.launch, log, backend.name) : undefined;

  const presence = new Presence(nc, {
    backend: backend.name,
    heartbeatMs: options.heartbeatMs,
    maxRequestBytes: options.limits.maxRequestBytes,
    heartbeat: (status) => ({
      backend: backend.name,
      workerId: deps.workerId,
      status,
      toolsVersion: null,
      endpointsLive: endpoints.filter((e) => e.coolingMs() === 0).length,
      endpointsTotal: endpoints.length,
      intervalMs: options.heartbeatMs,
    }),
    status: () => ({
      backend: backend.name,
      workerId: deps.workerId,
      toolsVersion: null,
      endpoints: endpoints.map((e) => ({ id: e.id, live: e.coolingMs() === 0, inFlight: e.inFlight, queued: 0, breaker: policy.breakers.get(e)!.state })),
    }),
    onCancel: ({ requestId, reason }) => {
      if (calls.cancel(requestId, `cancelled by the client: ${reason ?? "no reason given"}`) > 0) log.info({ requestId }, "chat cancelled by the client");
    },
    // Through the router a client does not know which backend serves its chat: every LLM caller hears this.
    moreCancelSubjects: [subjects.llmCancel()],
    // LLM endpoints are probed by nobody yet; the breaker and the cool-downs are what guard them.
    onHealth: () => undefined,
    onMoved: () => undefined,
  });

  // A model the backend does not list is "other": a client's made-up model names must not grow the metrics.
  const labels = (model: string) => ({
    gen_ai_provider_name: providerName,
    gen_ai_request_model: backend.models.includes(model) ? model : "other",
    backend: backend.name,
  });
  const live = new LiveCallers(nc, log, 3 * options.heartbeatMs);

  async function handleChat(msg: Msg): Promise<void> {
    const started = monotonicNow();
    const admitted = admitRequest(msg, LlmChatRequestSchema, options.limits, started);
    if (!admitted.ok) return void respondJson(msg, admitted.reply, maxPayload());
    const request = admitted.body;
    const { requestId, deadline } = admitted;
    const tried = triedOf(msg);
    const fallbacks = (msg.headers?.get(Headers.Fallbacks) ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    // A request that fell back here from another backend asks for that backend's model; it gets ours.
    const model = request.model !== undefined && (backend.models.includes(request.model) || tried.length === 0) ? request.model : backend.models[0]!;
    const conversationId = request.conversationId;
    const asked = chatStamp();
    // Logged once per chat: by the first caller that handles it (a fallback was forwarded it logged).
    if (conversationId && !msg.headers?.get(Headers.ChatLogged)) {
      const last = request.messages[request.messages.length - 1]!;
      chat.emit(conversationId, ChatEventType.user_message, { backend: backend.name, model, requestId, role: last.role, content: last.content }, asked);
    }

    let seq = 0;
    const stream = request.stream && msg.reply !== undefined && msg.reply !== "";
    // A stream's chunks carry a reply subject of ours. If the client's inbox has no subscriber any more
    // (it stopped listening without a cancel: it crashed, or lost its connection), NATS answers there
    // with "no responders", and the chat is ended upstream rather than generated for nobody.
    const watch = stream
      ? nc.subscribe(createInbox(), {
          callback: (_err, m) => {
            if (m.headers?.code === 503) calls.cancel(requestId, "the client stopped listening to the stream");
          },
        })
      : undefined;
    const pieceChars = Math.max(1024, Math.floor((maxPayload() - 1024) / 6));
    const send = (deltas: LlmDelta[]): number => {
      const before = seq;
      for (const delta of deltas)
        for (const piece of splitDelta(delta, pieceChars)) {
          const chunk: LlmStreamChunk = { seq: seq++, done: false, delta: piece };
          nc.publish(msg.reply!, encodeJson(chunk), { reply: watch!.getSubject() });
        }
      return seq - before;
    };
    const controller = calls.start(requestId, deadline - monotonicNow() - REPLY_MARGIN_MS);
    let outcome: LlmOutcome;
    try {
      outcome = await policy.run(request, model, deadline, controller.signal, {
        ...(stream ? { onDeltas: send } : {}),
        spareForFallback: fallbacks.length > 0,
      });
    } finally {
      calls.end(controller);
      if (!nc.isClosed()) watch?.unsubscribe();
    }

    if (!outcome.ok) tried.push(entryOf(backend.name, outcome.reply));
    if (!outcome.ok && outcome.fallback && fallbacks.length > 0) {
      const next = forward(msg, fallbacks, tried, deadline, conversationId !== undefined);
      if (next !== undefined) {
        log.info({ requestId, code: outcome.reply.error.code, next }, "falling back to the next backend");
        return;
      }
    }
    const reply: LlmChatReply = outcome.ok
      ? {
          ok: true,
          model: outcome.completion.model || model,
          message: { role: "assistant", content: outcome.completion.content, toolCalls: outcome.completion.toolCalls },
          stopReason: outcome.completion.stopReason,
          usage: outcome.completion.usage,
          meta: {
            backend: backend.name,
            endpoint: outcome.endpoint.id,
            attempts: outcome.attempts,
            durationMs: Math.round(outcome.durationMs * 1000) / 1000,
            tried,
            ...(outcome.firstTokenMs !== undefined ? { firstTokenMs: Math.round(outcome.firstTokenMs * 1000) / 1000 } : {}),
          },
        }
      : withTried(outcome.reply, tried);
    if (conversationId) {
      if (reply.ok)
        chat.emit(conversationId, ChatEventType.assistant_message, {
          backend: backend.name,
          model: reply.model,
          requestId,
          content: reply.message.content,
          toolCalls: reply.message.toolCalls,
          stopReason: reply.stopReason,
          usage: reply.usage,
          meta: reply.meta,
        });
      else chat.emit(conversationId, ChatEventType.error, { backend: backend.name, model, requestId, error: reply.error });
      // Stored before the reply (within a bound): the client's next message, which another caller may
      // log, comes after it.
      await chat.settled(conversationId, CHAT_SETTLE_MS);
    }
    if (stream) respondJson(msg, finalOfStream(seq, reply, maxPayload()), maxPayload());
    else respondJson(msg, reply, maxPayload());
    record(reply, model, started, outcome);
    if (!reply.ok) log.warn({ requestId, code: reply.error.code, err: reply.error.message }, "chat failed");
  }

  /**
   * Send the message on to the next backend of the chain that has a live caller, with the budget left
   * (the ones skipped are added to `tried`). Returns the backend, or undefined when none is left worth it.
   */
  function forward(msg: Msg, fallbacks: string[], tried: LlmTried[], deadline: number, logged: boolean): string | undefined {
    const now = monotonicNow();
    if (!msg.reply || deadline - now < MIN_FALLBACK_BUDGET_MS) return undefined;
    const chain = [...fallbacks];
    let next: string | undefined;
    // A forward to a backend nobody serves would be answered "no responders", to the client, which
    // could not tell that from a missing router: skip those here, as the router does.
    while ((next = chain.shift()) !== undefined && !live.has(next))
      tried.push({ backend: next, code: "BACKEND_UNAVAILABLE", message: `backend "${next}" has no live caller` });
    if (next === undefined) return undefined;
    const h = msg.headers!;
    h.set(Headers.TimeoutMs, stampBudget(deadline, now));
    h.set(Headers.Tried, JSON.stringify(tried));
    if (logged) h.set(Headers.ChatLogged, "1");
    if (chain.length > 0) h.set(Headers.Fallbacks, chain.join(","));
    else h.delete(Headers.Fallbacks);
    try {
      nc.publish(subjects.backendChat(next), msg.data, { reply: msg.reply, headers: h });
      return next;
    } catch (err) {
      log.warn({ err: (err as Error).message, next }, "could not forward to the fallback");
      return undefined;
    }
  }

  function record(reply: LlmChatReply, model: string, started: number, outcome: LlmOutcome): void {
    const seconds = (monotonicNow() - started) / 1000;
    const l = labels(model);
    metrics.requests.inc({ worker: "caller", backend: backend.name, outcome: reply.ok ? "ok" : reply.error.code });
    metrics.duration.observe({ worker: "caller", backend: backend.name, outcome: reply.ok ? "ok" : reply.error.code }, seconds);
    metrics.genAiOperationDuration.observe({ ...l, error_type: reply.ok ? "" : reply.error.code }, seconds);
    if (!reply.ok || !outcome.ok) return;
    metrics.genAiTokenUsage.observe({ ...l, gen_ai_token_type: "input" }, reply.usage.inputTokens);
    metrics.genAiTokenUsage.observe({ ...l, gen_ai_token_type: "output" }, reply.usage.outputTokens);
    if (outcome.firstTokenMs !== undefined) {
      metrics.genAiTimeToFirstToken.observe(l, outcome.firstTokenMs / 1000);
      const after = reply.usage.outputTokens - 1;
      // Both from the start of the attempt that answered.
      if (after > 0) metrics.genAiTimePerOutputToken.observe(l, (outcome.attemptMs - outcome.firstTokenMs) / 1000 / after);
    }
  }

  if (options.chatLog)
    await ensureChatStreams(nc, options.chatLog, log, deps.streamReplicas ?? 1).catch((err: unknown) =>
      log.debug({ err: (err as Error).message }, "no chat stream (is JetStream enabled?); chats that name a conversation are not logged"),
    );
  launched?.start();
  let service: Awaited<ReturnType<typeof addService>>;
  try {
    service = await addService(nc, {
      name: "toolbus-caller",
      version: TOOLBUS_VERSION,
      description: `toolbus caller for LLM backend ${backend.name}`,
      workerId: deps.workerId,
      metadata: { backend: backend.name, kind: backend.kind },
    });
  } catch (err) {
    // Nothing of a caller that did not start is left behind: no server process, subscription or pool.
    presence.stop();
    presence.stopCancels();
    if (!nc.isClosed()) usages.unsubscribe();
    live.stop();
    policy.close();
    await Promise.allSettled(endpoints.map((e) => e.close()));
    await launched?.stop();
    throw err;
  }
  service.addEndpoint("chat", {
    subject: subjects.backendChat(backend.name),
    queue: queueGroups.caller(backend.name),
    handler: (_err, msg) =>
      inFlight.track(
        handleChat(msg).catch((err: unknown) => {
          log.error({ err }, "LLM caller handler failed");
          answerInternal(msg, "caller", err, maxPayload());
        }),
      ),
    metadata: { backend: backend.name },
  });
  await presence.start();
  log.info({ endpoints: endpoints.length, models: backend.models, subject: subjects.backendChat(backend.name) }, "LLM caller started");

  return {
    name: `caller:${backend.name}`,
    backend: backend.name,
    endpoints,
    breakerStates: () => Object.fromEntries([...policy.breakers].map(([e, b]) => [e.id, b.state])),
    connectionStats: () => endpoints.map((e) => ({ id: e.id, requests: e.requests, connectionsOpened: e.connectionsOpened })),
    notReady: () => [],
    ...stopOnce(async (graceMs = 10_000) => {
      presence.stop();
      await service.stop();
      if (!(await inFlight.idle(graceMs))) {
        log.warn({ inFlight: inFlight.count }, "grace period over; cancelling the chats still in flight");
        calls.abortAll("the caller stopped before the backend answered (grace period over)");
        await inFlight.idle(1_000);
      }
      presence.stopCancels();
      if (!nc.isClosed()) usages.unsubscribe();
      live.stop();
      await chat.close();
      policy.close();
      await Promise.allSettled(endpoints.map((e) => e.close()));
      await launched?.stop();
      log.info("caller stopped");
    }),
  };
}

/**
 * A delta small enough for one NATS message (a JSON-escaped character takes at most 6 bytes): a huge
 * piece of text or of tool-call arguments is cut into several, which the client concatenates anyway.
 */
export function splitDelta(delta: LlmDelta, maxChars: number): LlmDelta[] {
  const text = delta.content ?? delta.toolCall?.arguments;
  if (text === undefined || text.length <= maxChars) return [delta];
  const pieces: LlmDelta[] = [];
  for (let i = 0; i < text.length; i += maxChars) {
    const part = text.slice(i, i + maxChars);
    if (delta.content !== undefined) pieces.push({ content: part });
    else pieces.push({ toolCall: i === 0 ? { ...delta.toolCall!, arguments: part } : { index: delta.toolCall!.index, arguments: part } });
  }
  return pieces;
}

/**
 * The last message of a stream: the whole reply, unless its message would not fit one NATS message;
 * then without the text and the tool calls (`contentOmitted`), which the chunks carried already.
 */
function finalOfStream(seq: number, reply: LlmChatReply, maxPayload: number): unknown {
  const final = { seq, done: true as const, ...reply };
  if (!reply.ok || encodeJson(final).length <= maxPayload) return final;
  return { ...final, message: { role: "assistant", content: "", toolCalls: [] }, contentOmitted: true };
}

/**
 * Which backends have a live caller, from the callers' heartbeats (the router keeps the same count): a
 * caller falling back forwards only to one that does.
 */
class LiveCallers {
  readonly #seen = new Map<string, Map<string, number>>();
  readonly #subs: Array<ReturnType<NatsConnection["subscribe"]>>;
  readonly #since = Date.now();

  constructor(
    private readonly nc: NatsConnection,
    log: Logger,
    /** Until then, a backend not heard of yet counts as live (news of it may be on its way). */
    private readonly graceMs: number,
  ) {
    const heard = (_err: unknown, msg: Msg): void => {
      const beat = CallerHeartbeatSchema.safeParse(parseJsonOrUndefined(msg.data));
      if (!beat.success) return void log.debug({ subject: msg.subject }, "ignoring a malformed caller heartbeat");
      const callers = this.#seen.get(beat.data.backend) ?? new Map<string, number>();
      this.#seen.set(beat.data.backend, callers);
      if (beat.data.status === "down") callers.delete(beat.data.workerId);
      // Gone after three silent intervals, as for the router.
      else callers.set(beat.data.workerId, Date.now() + 3 * beat.data.intervalMs);
    };
    const inbox = createInbox();
    this.#subs = [nc.subscribe(subjects.callerHeartbeatAll(), { callback: heard }), nc.subscribe(inbox, { callback: heard })];
    // The running callers announce themselves at once, as to a starting router.
    nc.publish(subjects.callerDiscovery(), encodeJson({}), { reply: inbox });
  }

  has(backend: string): boolean {
    const callers = this.#seen.get(backend);
    const now = Date.now();
    if (!callers) return now - this.#since < this.graceMs;
    for (const [id, until] of callers) if (until < now) callers.delete(id);
    return callers.size > 0;
  }

  stop(): void {
    if (!this.nc.isClosed()) for (const sub of this.#subs) sub.unsubscribe();
  }
}

/** The backends a fallen-back request went through (header Toolbus-Tried); a malformed header counts as none. */
function triedOf(msg: Msg): LlmTried[] {
  const raw = msg.headers?.get(Headers.Tried);
  if (!raw) return [];
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return [];
  }
  const parsed = LlmTriedSchema.array().max(64).safeParse(value);
  return parsed.success ? parsed.data : [];
}

function entryOf(backend: string, reply: ErrorReply): LlmTried {
  return { backend, code: reply.error.code, message: reply.error.message };
}

/**
 * An error that ends a chain of fallbacks names every backend of it that was tried, this one included,
 * and the ones with no live caller (details.tried); a chat that had no chain gets none.
 */
function withTried(reply: ErrorReply, tried: LlmTried[]): ErrorReply {
  return tried.length < 2 ? reply : { ...reply, error: { ...reply.error, details: { ...reply.error.details, tried } } };
}
