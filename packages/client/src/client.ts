import { randomUUID } from "node:crypto";
import type { z } from "zod";
import { RequestStrategy, connect, createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from "nats";
import {
  CHAT_STREAM,
  CacheInvalidateReplySchema,
  ChatEventSchema,
  CacheStatusSchema,
  CallerStatusSchema,
  ErrorCode,
  ErrorReplySchema,
  HealthEventSchema,
  HealthTableReplySchema,
  Headers,
  ToolProgressSchema,
  decodeJson,
  encodeJson,
  parseJsonOrUndefined,
  chatSubject,
  isBackendName,
  newEventId,
  subjects,
  type BackendTools,
  type CacheInvalidateRequest,
  type CacheStatus,
  type CallMeta,
  type ChatEvent,
  type CancelRequest,
  type CallerStatus,
  type CallToolResult,
  type HealthEvent,
  type ToolCallReply,
  type ToolCallRequestInput,
  type ToolsListReply,
  type LlmChatOkReply,
  type LlmChatRequestInput,
  type ForwardedMcpMethod,
  type McpForwardReply,
  type McpForwardRequestInput,
  type ToolProgress,
} from "@toolbus/protocol";
import { toolbusConnectionOptions } from "./connection.js";
import { ToolbusError } from "./errors.js";
import { ChatStream, finalReply, isStreamChunk, type StreamSink } from "./chat-stream.js";
import { LocalMsg, type LocalRoutes } from "./local.js";

interface Pending {
  answer(msg: Msg): void;
  fail(err: ToolbusError): void;
  /** Tell the backend's callers the call is abandoned (a call to a backend only). */
  cancel(reason: string): void;
}

interface Mux {
  prefix: string;
  pending: Map<string, Pending>;
  subscription: Subscription;
}

/** How long past its budget the client still waits for the worker's own typed answer. */
const ANSWER_GRACE_MS = 25;

export interface ToolbusClientOptions {
  /** NATS URL(s); default nats://127.0.0.1:4222. */
  servers?: string | string[];
  /** Connection name shown in NATS monitoring. */
  name?: string;
  user?: string;
  pass?: string;
  token?: string;
  /** Path of a NATS .creds file (user JWT and nkey seed); an unreadable one throws NatsCredsError. */
  credsFile?: string;
  /** Budget for calls that do not set `timeoutMs`; default 30 s. */
  defaultTimeoutMs?: number;
}

export interface CallOptions {
  /** The call's whole budget in ms: the answer (result or error) comes within it. */
  timeoutMs?: number;
  /**
   * Abort to stop waiting: the promise rejects with CANCELLED and the backend's callers are told
   * (a CancelRequest on `toolbus.v1.cancel.<backend>`) so the backend call can stop too.
   */
  signal?: AbortSignal;
  /** Send straight to the backend's callers (one hop) instead of through the router. */
  direct?: boolean;
  /** Set to correlate with your own logs (and to name the call in a cancel); a UUID otherwise. */
  requestId?: string;
  /** W3C trace context to pass through. */
  traceparent?: string;
  conversationId?: string;
  /** "bypass": skip the cache (no lookup, no store); the call reaches the backend. */
  cache?: "default" | "bypass";
  /**
   * More headers to send, e.g. the one naming the user that a backend's results vary by (its
   * `cache.vary`). toolbus's own headers (Toolbus-*) cannot be set this way.
   */
  headers?: Record<string, string>;
  /**
   * Hear the backend's progress notifications for this call, as they come (the caller relays them
   * over NATS). Without it no progress is sent to the client.
   */
  onProgress?: (progress: ToolProgress) => void;
}

/** Options of `chat` and `chatStream`. */
export type ChatOptions = Omit<CallOptions, "cache" | "onProgress">;

export interface HealthOptions {
  /** How long to wait for the health prober's answer; default the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
}

/** A running `watchHealth`: `stop()` ends it (idempotent). */
export interface HealthWatch {
  stop(): void;
}

/** A successful call: the MCP CallToolResult (which may have `isError: true`) and how it was served. */
export interface ToolCallOutcome {
  result: CallToolResult;
  meta: CallMeta;
}

/**
 * Calls tools through toolbus.
 *
 * ```ts
 * const client = await ToolbusClient.connect({ servers: "nats://127.0.0.1:4222" });
 * const { result } = await client.callTool("everything", "echo", { message: "hi" }, { timeoutMs: 5000 });
 * await client.close();
 * ```
 * Failures reject with a ToolbusError whose `code` says why (DEADLINE_EXCEEDED, UNKNOWN_TOOL, ...).
 */
export class ToolbusClient {
  readonly nc: NatsConnection;
  readonly #ownsConnection: boolean;
  readonly #defaultTimeoutMs: number;
  readonly #local: LocalRoutes | undefined;
  #replies: Mux | undefined;
  #sequence = 0;
  /** Subscriptions of running `watchHealth`s, ended by `close()` too. */
  readonly #watches = new Set<Subscription>();

  /**
   * `local`: the workers of this process (`toolbus up`); a request to a subject one of them serves goes
   * to it in-process, not through the NATS server (see LocalRoutes).
   */
  constructor(nc: NatsConnection, options: { defaultTimeoutMs?: number; ownsConnection?: boolean; local?: LocalRoutes } = {}) {
    this.nc = nc;
    this.#local = options.local;
    this.#ownsConnection = options.ownsConnection ?? false;
    this.#defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
  }

  /**
   * Connect to NATS (with the options every toolbus worker uses: reconnect forever, pings, no async
   * traces) and return a client that closes the connection on `close()`.
   */
  static async connect(options: ToolbusClientOptions = {}): Promise<ToolbusClient> {
    const nc = await connect(
      toolbusConnectionOptions({
        servers: options.servers ?? "nats://127.0.0.1:4222",
        name: options.name ?? "toolbus-client",
        user: options.user,
        pass: options.pass,
        token: options.token,
        credsFile: options.credsFile,
      }),
    );
    return new ToolbusClient(nc, { defaultTimeoutMs: options.defaultTimeoutMs, ownsConnection: true });
  }

  /** Call `tool` on `backend`. Resolves with the result; rejects with a ToolbusError. */
  async callTool(backend: string, tool: string, args: Record<string, unknown> = {}, options: CallOptions = {}): Promise<ToolCallOutcome> {
    const body: ToolCallRequestInput = { backend, tool, arguments: args };
    if (options.conversationId !== undefined) body.conversationId = options.conversationId;
    if (options.cache !== undefined) body.cache = options.cache;
    // Subject builders reject a malformed backend name; that is the caller's mistake, reported as such.
    let subject: string;
    try {
      subject = options.direct ? subjects.backendCall(backend) : subjects.toolCall();
    } catch (err) {
      throw ToolbusError.of(ErrorCode.BAD_REQUEST, (err as Error).message);
    }
    // Through the router a malformed name gets its answer from the router; there is nobody to cancel at.
    const cancelSubject = isBackendName(backend) ? subjects.cancelCall(backend) : undefined;
    const reply = (await this.#request(
      subject,
      encodeJson(body),
      options,
      options.direct ? `no caller serves backend "${backend}"` : "no router is running",
      cancelSubject,
    )) as ToolCallReply;
    if (reply.ok) return { result: reply.result, meta: reply.meta };
    throw new ToolbusError(reply.error);
  }

  /**
   * An LLM chat, answered whole. Through the router (which picks the backend by `backend` or by
   * `model`, with its fallbacks) unless `direct` (then `request.backend` is required). Resolves with the
   * assistant's message, usage, stop reason and `meta` (which backend answered, what was tried first);
   * rejects with a ToolbusError.
   */
  async chat(request: LlmChatRequestInput, options: ChatOptions = {}): Promise<LlmChatOkReply> {
    const reply = await this.#chat({ ...request, stream: false }, options, undefined);
    return finalReply(reply, undefined);
  }

  /**
   * An LLM chat, streamed: iterate the returned stream for the deltas (text, pieces of tool calls) as
   * they are generated; `result` resolves with the whole reply once the stream ends. Stopping early
   * (`break`, or `options.signal`) closes the upstream request. A failure after chunks arrived rejects
   * with `details.delivered` saying how much was sent (the stream is not resumed).
   */
  chatStream(request: LlmChatRequestInput, options: ChatOptions = {}): ChatStream {
    const stream = new ChatStream();
    stream.settle(this.#chat({ ...request, stream: true }, options, stream).then((reply) => finalReply(reply, stream)));
    return stream;
  }

  #chat(body: LlmChatRequestInput, options: ChatOptions, sink: StreamSink | undefined): Promise<unknown> {
    if (options.conversationId !== undefined) body.conversationId = options.conversationId;
    let subject: string;
    try {
      if (options.direct && body.backend === undefined) throw new Error("a direct chat needs request.backend");
      subject = options.direct ? subjects.backendChat(body.backend!) : subjects.llmChat();
    } catch (err) {
      return Promise.reject(ToolbusError.of(ErrorCode.BAD_REQUEST, (err as Error).message));
    }
    const noResponders = options.direct ? `no caller serves backend "${body.backend}"` : "no router is running";
    return this.#request(subject, encodeJson(body), options, noResponders, subjects.llmCancel(), sink);
  }

  /**
   * An MCP request besides tools (`resources/list`, `resources/read`, `prompts/get`, ...) to one
   * backend's callers, passed to the backend as it is. Resolves with the MCP result; rejects with a
   * ToolbusError.
   */
  async mcpRequest(
    backend: string,
    method: ForwardedMcpMethod,
    params: Record<string, unknown> = {},
    options: Omit<CallOptions, "direct" | "conversationId" | "cache" | "onProgress"> = {},
  ): Promise<Record<string, unknown>> {
    let subject: string;
    try {
      subject = subjects.backendMcp(backend);
    } catch (err) {
      throw ToolbusError.of(ErrorCode.BAD_REQUEST, (err as Error).message);
    }
    const body: McpForwardRequestInput = { backend, method, params };
    const reply = (await this.#request(
      subject,
      encodeJson(body),
      options,
      `no caller serves backend "${backend}"`,
      subjects.cancelCall(backend),
    )) as McpForwardReply;
    if (reply.ok) return reply.result;
    throw new ToolbusError(reply.error);
  }

  /** The tools of every backend the router knows (or of one backend). */
  async listTools(backend?: string, options: Omit<CallOptions, "direct" | "conversationId" | "cache"> = {}): Promise<BackendTools[]> {
    const reply = (await this.#request(subjects.toolsList(), encodeJson(backend ? { backend } : {}), options, "no router is running")) as ToolsListReply;
    if (reply.ok) return reply.backends;
    throw new ToolbusError(reply.error);
  }

  /**
   * The status of every running caller (endpoints, breakers, load), collected for `waitMs`. An empty
   * list means no caller answered.
   */
  async callerStatus(waitMs = 500): Promise<CallerStatus[]> {
    const statuses = await this.#collect(subjects.callerStatus(), CallerStatusSchema, waitMs);
    return statuses.sort((a, b) => a.backend.localeCompare(b.backend) || a.workerId.localeCompare(b.workerId));
  }

  /** Every answer to `subject` within `waitMs` that fits `schema` (none when nobody serves it). */
  async #collect<S extends z.ZodType>(subject: string, schema: S, waitMs: number): Promise<Array<z.infer<S>>> {
    const answers: Array<z.infer<S>> = [];
    try {
      const replies = await this.nc.requestMany(subject, encodeJson({}), { strategy: RequestStrategy.Timer, maxWait: waitMs });
      for await (const msg of replies) {
        const parsed = schema.safeParse(decodeJson(msg.data));
        if (parsed.success) answers.push(parsed.data);
      }
    } catch (err) {
      // "No responders": nobody is running.
      if ((err as { code?: string }).code !== "503") throw err;
    }
    return answers;
  }

  /**
   * Publish a chat event to its conversation's log and wait for JetStream to store it (the writer
   * then appends it to `<conversation>.jsonl`). `id` (a UUIDv7) and `timestamp` (UTC, now) are filled
   * in when absent; the id is the de-duplication id, so sending the same event again stores it once.
   * Rejects with BAD_REQUEST for an invalid event, BACKEND_UNAVAILABLE when the stream is missing or
   * does not answer within `timeoutMs`.
   */
  async publishChatEvent(
    input: Omit<ChatEvent, "id" | "timestamp"> & { id?: string; timestamp?: string },
    options: { timeoutMs?: number } = {},
  ): Promise<{ id: string; sequence: number; duplicate: boolean }> {
    const event = { ...input, id: input.id ?? newEventId(), timestamp: input.timestamp ?? new Date().toISOString() };
    const parsed = ChatEventSchema.safeParse(event);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; ");
      throw ToolbusError.of(ErrorCode.BAD_REQUEST, `not a valid chat event: ${issues}`);
    }
    const timeoutMs = options.timeoutMs ?? this.#defaultTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    const data = encodeJson(event);
    // Sent again with the same id until stored or out of time: the stream keeps it once (its duplicate
    // window). A stream whose leader was on a lost NATS node answers nobody until it has elected another.
    for (let wait = 50; ; wait = Math.min(1_000, wait * 2)) {
      try {
        const ack = await this.nc.jetstream().publish(chatSubject(event.conversationId), data, {
          msgID: event.id,
          timeout: Math.max(1, Math.min(timeoutMs, deadline - performance.now())),
        });
        return { id: event.id, sequence: ack.seq, duplicate: ack.duplicate };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === "503" && (await this.#chatStreamMissing())) {
          throw ToolbusError.of(
            ErrorCode.BACKEND_UNAVAILABLE,
            "no chat stream (TOOLBUS_CHAT): start a chat-log writer (toolbus up, or toolbus worker chat-log-writer) once to create it",
            { cause: err },
          );
        }
        const transient = code === "503" || code === "TIMEOUT";
        if (!transient || performance.now() + wait >= deadline) {
          throw ToolbusError.of(ErrorCode.BACKEND_UNAVAILABLE, `the chat event was not stored within ${timeoutMs} ms: ${(err as Error).message}`, {
            cause: err,
          });
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** Whether the chat stream does not exist (as opposed to having no leader for a moment). */
  async #chatStreamMissing(): Promise<boolean> {
    try {
      await (await this.nc.jetstreamManager({ timeout: 1_000 })).streams.info(CHAT_STREAM);
      return false;
    } catch (err) {
      return /stream not found/i.test((err as Error).message) || (err as { code?: string }).code === "404";
    }
  }

  /** Every running cache replica's counters (hits by tier, misses, entries, bytes), collected for `waitMs`. */
  async cacheStatus(waitMs = 500): Promise<CacheStatus[]> {
    return (await this.#collect(subjects.cacheStatus(), CacheStatusSchema, waitMs)).sort((a, b) => a.workerId.localeCompare(b.workerId));
  }

  /**
   * Drop every cached result of `backend` (or of one of its tools) from every cache replica. Resolves
   * with how many entries the shared tier held (`shared: false`: the cache has no shared tier, and
   * `removed` counts the answering replica's memory); rejects with BACKEND_UNAVAILABLE when no cache
   * runs, or when the shared tier could not be purged (every replica's memory was dropped all the same).
   */
  async invalidateCache(backend: string, tool?: string, options: { timeoutMs?: number } = {}): Promise<{ removed: number; shared: boolean }> {
    const body: CacheInvalidateRequest = tool === undefined ? { backend } : { backend, tool };
    const reply = await this.#request(subjects.cacheInvalidate(), encodeJson(body), { timeoutMs: options.timeoutMs }, "no cache worker is running");
    const parsed = CacheInvalidateReplySchema.safeParse(reply);
    if (!parsed.success) throw ToolbusError.of(ErrorCode.INTERNAL, "the cache's answer is not an invalidation reply");
    if (!parsed.data.ok) throw new ToolbusError(parsed.data.error);
    return { removed: parsed.data.removed, shared: parsed.data.shared };
  }

  /**
   * The health prober's table: the latest HealthEvent of every endpoint it probes. Rejects with
   * BACKEND_UNAVAILABLE at once when no health prober is running.
   */
  async health(options: HealthOptions = {}): Promise<HealthEvent[]> {
    const reply = await this.#request(subjects.healthGet(), encodeJson({}), { timeoutMs: options.timeoutMs }, "no health prober is running: nobody answers");
    const table = HealthTableReplySchema.safeParse(reply);
    if (table.success) return table.data.endpoints;
    const error = ErrorReplySchema.safeParse(reply);
    if (error.success) throw new ToolbusError(error.data.error);
    throw ToolbusError.of(ErrorCode.INTERNAL, `the health prober's answer is not a health table: ${table.error.issues[0]?.message ?? "invalid"}`);
  }

  /**
   * Every HealthEvent the health prober publishes (state changes, `change: true`, and periodic
   * heartbeats), of every backend, from now on until `stop()` or `close()`. Messages that are not a
   * valid HealthEvent are ignored.
   */
  watchHealth(onEvent: (event: HealthEvent) => void): HealthWatch {
    const subscription = this.nc.subscribe(subjects.healthEventsAll(), {
      callback: (err, msg) => {
        if (err) return;
        let parsed;
        try {
          parsed = HealthEventSchema.safeParse(decodeJson(msg.data));
        } catch {
          return; // not JSON
        }
        if (!parsed.success) return;
        const event = parsed.data;
        try {
          onEvent(event);
        } catch (thrown) {
          // A throw inside the NATS client's read loop would break the connection; surface it as any
          // listener's would be, outside that loop.
          queueMicrotask(() => {
            throw thrown;
          });
        }
      },
    });
    this.#watches.add(subscription);
    return {
      stop: () => {
        if (!this.#watches.delete(subscription)) return;
        if (!this.nc.isClosed()) subscription.unsubscribe();
      },
    };
  }

  /**
   * Close: calls still waiting reject with CANCELLED and their backends are told (best effort); the
   * NATS connection drains and closes if this client opened it.
   */
  async close(): Promise<void> {
    for (const pending of [...(this.#replies?.pending.values() ?? [])]) {
      pending.cancel("the client was closed");
      pending.fail(ToolbusError.of(ErrorCode.CANCELLED, "the client was closed"));
    }
    // On a connection the client does not own, leave nothing behind.
    if (!this.nc.isClosed()) {
      this.#replies?.subscription.unsubscribe();
      for (const watch of this.#watches) watch.unsubscribe();
    }
    this.#watches.clear();
    this.#replies = undefined;
    if (this.#ownsConnection && !this.nc.isClosed()) await this.nc.drain();
  }

  /**
   * One request over the client's own reply multiplexer: a single wildcard subscription on a private
   * inbox, a token per request. (nats.js's request() builds an Error with a stack trace for every call,
   * a measurable share of a client's CPU, and cannot be cancelled by an AbortSignal.)
   */
  #request(subject: string, data: Uint8Array, options: CallOptions, noResponders: string, cancelSubject?: string, sink?: StreamSink): Promise<unknown> {
    const timeoutMs = Math.floor(options.timeoutMs ?? this.#defaultTimeoutMs);
    if (!(timeoutMs > 0)) return Promise.reject(ToolbusError.of(ErrorCode.BAD_REQUEST, `timeoutMs must be a positive number of ms, got ${options.timeoutMs}`));
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(ToolbusError.of(ErrorCode.CANCELLED, "the call was cancelled before it was sent"));
    if (this.nc.isClosed()) return Promise.reject(ToolbusError.of(ErrorCode.BACKEND_UNAVAILABLE, "the NATS connection is closed"));
    const h = natsHeaders();
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      if (!name.toLowerCase().startsWith("toolbus-")) h.set(name, value);
    }
    h.set(Headers.TimeoutMs, String(timeoutMs));
    // The same id names the call in a CancelRequest, so it is fixed here rather than by a later hop.
    const requestId = options.requestId ?? randomUUID();
    h.set(Headers.RequestId, requestId);
    if (options.traceparent) h.set(Headers.TraceParent, options.traceparent);

    const mux = this.#mux();
    const token = (++this.#sequence).toString(36);
    // Progress comes to the same inbox under a token of its own, kept until the call settles.
    const progressToken = options.onProgress ? `${token}-p` : undefined;
    if (progressToken) h.set(Headers.ProgressTo, `${mux.prefix}${progressToken}`);
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        mux.pending.delete(token);
        if (progressToken) mux.pending.delete(progressToken);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const cancel = (reason: string): void => {
        if (cancelSubject === undefined) return;
        const request: CancelRequest = { requestId, reason };
        try {
          this.nc.publish(cancelSubject, encodeJson(request));
        } catch {
          // Closed or draining connection: nobody can be told, and the caller's deadline ends the call anyway.
        }
      };
      const onAbort = (): void => {
        settle();
        cancel("aborted by the client");
        // A late answer finds no pending entry and is dropped.
        reject(ToolbusError.of(ErrorCode.CANCELLED, "the call was cancelled by the caller"));
      };
      const timer = setTimeout(() => {
        settle();
        reject(ToolbusError.of(ErrorCode.DEADLINE_EXCEEDED, `no answer within the budget of ${timeoutMs} ms`));
      }, timeoutMs + ANSWER_GRACE_MS);
      signal?.addEventListener("abort", onAbort, { once: true });
      mux.pending.set(token, {
        cancel,
        fail: (err) => {
          settle();
          reject(err);
        },
        answer: (msg) => {
          // The server answers 503 itself when nobody subscribes to the subject.
          if (msg.data.length === 0 && msg.headers?.code === 503) {
            settle();
            reject(ToolbusError.of(ErrorCode.BACKEND_UNAVAILABLE, `${noResponders} on ${subject}`));
            return;
          }
          let body: unknown;
          try {
            body = decodeJson(msg.data);
          } catch (err) {
            settle();
            reject(ToolbusError.of(ErrorCode.INTERNAL, "the answer was not valid JSON", { cause: err }));
            return;
          }
          // A chunk of a stream: more follow, the entry stays.
          if (sink && isStreamChunk(body)) {
            const problem = sink.chunk(body);
            if (problem === undefined) return;
            settle();
            cancel(problem);
            reject(ToolbusError.of(ErrorCode.INTERNAL, problem));
            return;
          }
          settle();
          resolve(body);
        },
      });
      if (progressToken) {
        const onProgress = options.onProgress!;
        mux.pending.set(progressToken, {
          cancel: () => undefined,
          fail: () => undefined,
          answer: (msg) => {
            const parsed = ToolProgressSchema.safeParse(parseJsonOrUndefined(msg.data));
            if (parsed.success) onProgress(parsed.data);
          },
        });
      }
      sink?.bind((reason) => {
        if (!mux.pending.has(token)) return;
        settle();
        cancel(reason);
        reject(ToolbusError.of(ErrorCode.CANCELLED, reason));
      });
      // In-process only when nothing else comes back over the bus: progress and stream chunks travel
      // through the server and must not be overtaken by an answer that does not.
      const local = progressToken === undefined && sink === undefined ? this.#local?.handlerOf(subject) : undefined;
      try {
        if (local) {
          const msg = new LocalMsg(subject, data, h, `${mux.prefix}${token}`, (answer, headers) =>
            mux.pending.get(token)?.answer({ data: answer, headers } as Msg),
          );
          // Delivered as a message would be: later, not inside this call's stack.
          queueMicrotask(() => local(msg));
        } else {
          this.nc.publish(subject, data, { reply: `${mux.prefix}${token}`, headers: h });
        }
      } catch (err) {
        settle();
        reject(ToolbusError.of(ErrorCode.BACKEND_UNAVAILABLE, `NATS publish failed: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  #mux(): Mux {
    if (!this.#replies) {
      const prefix = `${createInbox()}.`;
      const pending = new Map<string, Pending>();
      const subscription = this.nc.subscribe(`${prefix}*`, {
        callback: (err, msg) => {
          if (err) return;
          pending.get(msg.subject.slice(prefix.length))?.answer(msg);
        },
      });
      this.#replies = { prefix, pending, subscription };
    }
    return this.#replies;
  }
}
