import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  CancelledNotificationSchema,
  ErrorCode as McpErrorCode,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListResourcesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  type CallToolResult,
  type JSONRPCMessage,
  type JSONRPCNotification,
  type ServerNotification,
} from "@modelcontextprotocol/sdk/types.js";
import type { NatsConnection } from "nats";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import type { GatewayConfig } from "@toolbus/config";
import { randomUUID } from "node:crypto";
import {
  ErrorCode,
  GatewayCancelSchema,
  encodeJson,
  parseJsonOrUndefined,
  subjects,
  type CancelRequest,
  type ForwardedMcpMethod,
  type GatewayCancel,
  type ToolDescriptor,
} from "@toolbus/protocol";
import { TOOLBUS_VERSION, type Logger, type Metrics } from "@toolbus/runtime";
import type { Catalog, CatalogChange } from "./catalog.js";

/** Where a client may ask for its own budget: `_meta` of tools/call (ms). */
export const TIMEOUT_META = "io.toolbus/timeoutMs";
/** Where a toolbus error's code and details go in an MCP error's `data` or a result's `_meta`. */
export const ERROR_META = "io.toolbus/error";

/** Who is asking: the session (for cancels by id) and which backends the caller's token reaches. */
export interface Caller {
  readonly session: string;
  readonly allowed: (backend: string) => boolean;
  /** W3C trace context of the MCP request, passed into the bus. */
  readonly traceparent?: string;
}

/**
 * What every session's MCP server shares: the catalog, the bus client, the calls running here (so a
 * cancel heard on the bus, from whichever replica the client sent it to, reaches the right one).
 */
export class GatewayCore {
  /** Calls running in this process, by session and the client's JSON-RPC id. */
  readonly #running = new Map<string, Running>();
  /** Toolbus request ids of this process's calls: a prefix of its own and a counter (cheaper than a UUID each). */
  readonly #idPrefix = `gw-${randomUUID().slice(0, 8)}-`;
  #sequence = 0;
  #unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    readonly catalog: Catalog,
    private readonly client: ToolbusClient,
    private readonly nc: NatsConnection,
    private readonly config: GatewayConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Whether a call goes through the router (else straight to the backend's callers). */
    private readonly viaRouter: (backend: string, tool: string, descriptor: ToolDescriptor | undefined) => boolean = () => true,
  ) {}

  start(): void {
    const sub = this.nc.subscribe(subjects.gatewayCancel(), {
      callback: (err, msg) => {
        if (err) return;
        const parsed = GatewayCancelSchema.safeParse(parseJsonOrUndefined(msg.data));
        if (!parsed.success) return;
        const running = this.#running.get(key(parsed.data.session, parsed.data.requestId));
        if (!running) return;
        this.log.info({ session: parsed.data.session, requestId: parsed.data.requestId }, "MCP client cancelled a call");
        this.#cancel(running, parsed.data.reason ?? "cancelled by the MCP client");
      },
    });
    this.#unsubscribe = () => sub.drain();
  }

  async stop(): Promise<void> {
    await this.#unsubscribe?.();
  }

  get running(): number {
    return this.#running.size;
  }

  /** Abort every call still running (a stop out of grace). */
  abortAll(reason: string): void {
    for (const r of this.#running.values()) this.#cancel(r, reason);
  }

  /**
   * Cancel a running call where it runs: the backend's callers hear it by the call's toolbus request
   * id, the one holding it cancels it at the backend and answers CANCELLED (which ends the call here).
   */
  #cancel(running: Running, reason: string): void {
    const cancel: CancelRequest = { requestId: running.requestId, reason: reason.slice(0, 256) };
    try {
      this.nc.publish(subjects.cancelCall(running.backend), encodeJson(cancel));
    } catch {
      // The connection is closing: the call's own deadline ends it.
    }
  }

  /** An SDK Server for one MCP session (or the stdio client), answering from the catalog and the bus. */
  createServer(caller: Caller): Server {
    const server = new Server(
      { name: "toolbus", version: TOOLBUS_VERSION },
      {
        capabilities: { tools: { listChanged: true }, resources: { listChanged: true }, prompts: { listChanged: true } },
        instructions: "toolbus: every backend's tools, named <backend>__<tool> unless configured otherwise.",
      },
    );
    server.setRequestHandler(ListToolsRequestSchema, () => this.#measure("tools/list", async () => ({ tools: this.catalog.tools(caller.allowed) })));
    server.setRequestHandler(CallToolRequestSchema, (request, extra) =>
      this.#measure("tools/call", () =>
        this.#call(caller, request.params, extra.requestId, extra.signal, (n) => extra.sendNotification(n as ServerNotification)),
      ),
    );
    server.setRequestHandler(ListResourcesRequestSchema, () =>
      this.#measure("resources/list", async () => ({ resources: this.catalog.resources(caller.allowed) })),
    );
    server.setRequestHandler(ListResourceTemplatesRequestSchema, () =>
      this.#measure("resources/templates/list", async () => ({ resourceTemplates: this.catalog.templates(caller.allowed) })),
    );
    server.setRequestHandler(ReadResourceRequestSchema, (request, extra) =>
      this.#measure("resources/read", async () => {
        const backend = this.catalog.resolveResource(request.params.uri, caller.allowed);
        // -32002: the spec's code for a resource nobody serves.
        if (!backend) throw new RpcError(-32002, "Resource not found", { uri: request.params.uri });
        return this.#forward(caller, backend, "resources/read", { uri: request.params.uri }, extra.signal) as never;
      }),
    );
    server.setRequestHandler(ListPromptsRequestSchema, () => this.#measure("prompts/list", async () => ({ prompts: this.catalog.prompts(caller.allowed) })));
    server.setRequestHandler(GetPromptRequestSchema, (request, extra) =>
      this.#measure("prompts/get", async () => {
        const target = this.catalog.resolvePrompt(request.params.name);
        if (!target || !caller.allowed(target.backend)) throw new RpcError(McpErrorCode.InvalidParams, `Unknown prompt: ${request.params.name}`);
        const params = { name: target.prompt, ...(request.params.arguments ? { arguments: request.params.arguments } : {}) };
        return this.#forward(caller, target.backend, "prompts/get", params, extra.signal) as never;
      }),
    );
    // A cancel travels on the bus: the replica that runs the call may not be the one the client told.
    server.setNotificationHandler(CancelledNotificationSchema, (n) => {
      const cancel: GatewayCancel = {
        session: caller.session,
        requestId: n.params.requestId ?? "",
        ...(n.params.reason ? { reason: String(n.params.reason).slice(0, 256) } : {}),
      };
      this.nc.publish(subjects.gatewayCancel(), encodeJson(cancel));
    });
    return server;
  }

  async #measure<T>(method: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let outcome = "ok";
    try {
      const result = await run();
      if ((result as { isError?: boolean }).isError) outcome = "tool_error";
      return result;
    } catch (err) {
      outcome = err instanceof RpcError ? String((err.data as { [ERROR_META]?: { code?: string } } | undefined)?.[ERROR_META]?.code ?? err.code) : "error";
      throw err;
    } finally {
      this.#recorded(method, outcome).record((performance.now() - started) / 1000);
    }
  }

  /** The metric children of one method and outcome, looked up once (prom-client hashes the labels on every call). */
  readonly #children = new Map<string, { record(seconds: number): void }>();
  #recorded(method: string, outcome: string): { record(seconds: number): void } {
    const k = `${method}\u0000${outcome}`;
    let child = this.#children.get(k);
    if (!child) {
      const count = this.metrics.gatewayRequests.labels(method, outcome);
      const duration = this.metrics.gatewayDuration.labels(method, outcome);
      child = {
        record: (seconds) => {
          count.inc();
          duration.observe(seconds);
        },
      };
      // Outcomes are a bounded set (ok, tool_error, the toolbus codes, JSON-RPC codes): the map stays small.
      this.#children.set(k, child);
    }
    return child;
  }

  /** A resources or prompts request passed to the backend as it is, through its callers. */
  async #forward(
    caller: Caller,
    backend: string,
    method: ForwardedMcpMethod,
    params: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    try {
      return await this.client.mcpRequest(backend, method, params, {
        timeoutMs: this.budgetFor(backend, undefined),
        signal,
        ...(caller.traceparent ? { traceparent: caller.traceparent } : {}),
      });
    } catch (err) {
      if (!isToolbusError(err)) throw err;
      // The backend's own JSON-RPC error keeps its code (a missing prompt argument is its -32602).
      const code = typeof err.details?.jsonRpcCode === "number" ? err.details.jsonRpcCode : McpErrorCode.InternalError;
      throw new RpcError(code, `${method}: ${err.message} (${err.code})`, { [ERROR_META]: err.toJSON() });
    }
  }

  /**
   * tools/call answered without the SDK Server's request machinery (a zod pass over the request and
   * the result, an AbortController and a handful of closures per request: about a tenth of the front
   * door's CPU per call). The HTTP transport sends tools/call here; the answer is the JSON-RPC response.
   * Everything else (initialize, lists, prompts, notifications) stays with the SDK's Server.
   */
  async answerToolCall(
    caller: Caller,
    message: { id: string | number; params?: unknown },
    notify: (n: JSONRPCNotification) => Promise<void>,
  ): Promise<JSONRPCMessage> {
    const p = message.params as { name?: unknown; arguments?: unknown; _meta?: unknown } | undefined;
    const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
    if (!p || typeof p.name !== "string" || (p.arguments !== undefined && !isObject(p.arguments)) || (p._meta !== undefined && !isObject(p._meta))) {
      return {
        jsonrpc: "2.0",
        id: message.id,
        error: { code: McpErrorCode.InvalidParams, message: "Invalid params: tools/call needs { name: string, arguments?: object }" },
      };
    }
    try {
      const params = p as { name: string; arguments?: Record<string, unknown>; _meta?: Record<string, unknown> };
      const result = await this.#measure("tools/call", () =>
        this.#call(caller, params, message.id, undefined, (n) => notify({ jsonrpc: "2.0", method: n.method, params: n.params } as JSONRPCNotification)),
      );
      return { jsonrpc: "2.0", id: message.id, result };
    } catch (err) {
      if (err instanceof RpcError)
        return { jsonrpc: "2.0", id: message.id, error: { code: err.code, message: err.message, ...(err.data !== undefined ? { data: err.data } : {}) } };
      this.log.error({ err }, "gateway tools/call failed");
      return { jsonrpc: "2.0", id: message.id, error: { code: McpErrorCode.InternalError, message: "internal error" } };
    }
  }

  /** The budget of a call to `backend`: the client's ask (if any) or the default, never past the maximum. */
  budgetFor(backend: string, asked: unknown): number {
    const own = this.config.budget.backends[backend];
    const max = own?.maxMs ?? this.config.budget.maxMs;
    const wanted = typeof asked === "number" && asked > 0 ? asked : (own?.defaultMs ?? this.config.budget.defaultMs);
    return Math.floor(Math.min(wanted, max));
  }

  async #call(
    caller: Caller,
    params: { name: string; arguments?: Record<string, unknown>; _meta?: Record<string, unknown> },
    requestId: string | number,
    clientSignal: AbortSignal | undefined,
    notify: (n: { method: string; params: Record<string, unknown> }) => Promise<void>,
  ): Promise<CallToolResult> {
    const target = this.catalog.resolve(params.name);
    if (!target || !caller.allowed(target.backend)) {
      // A backend the token may not reach is as unknown as one that does not exist.
      throw new RpcError(McpErrorCode.InvalidParams, `Unknown tool: ${params.name}`, { [ERROR_META]: { code: ErrorCode.UNKNOWN_TOOL } });
    }
    const progressToken = params._meta?.progressToken as string | number | undefined;
    const running: Running = { backend: target.backend, requestId: `${this.#idPrefix}${++this.#sequence}` };
    const k = key(caller.session, requestId);
    this.#running.set(k, running);
    const onClientGone = (): void => this.#cancel(running, "the MCP client's connection closed");
    // Progress relayed so far; the result goes after it (a client drops progress that comes after the result).
    let relayed: Promise<void> = Promise.resolve();
    clientSignal?.addEventListener("abort", onClientGone, { once: true });
    try {
      const { result } = await this.client.callTool(target.backend, target.tool, params.arguments ?? {}, {
        timeoutMs: this.budgetFor(target.backend, params._meta?.[TIMEOUT_META]),
        requestId: running.requestId,
        direct: !this.viaRouter(target.backend, target.tool, target.descriptor as ToolDescriptor),
        ...(caller.traceparent ? { traceparent: caller.traceparent } : {}),
        ...(progressToken !== undefined
          ? {
              onProgress: (p) =>
                (relayed = relayed.then(() => notify({ method: "notifications/progress", params: { progressToken, ...p } })).catch(() => undefined)),
            }
          : {}),
      });
      await relayed;
      return result as CallToolResult;
    } catch (err) {
      if (!isToolbusError(err)) throw err;
      const wire = err.toJSON();
      if (err.code === ErrorCode.VALIDATION_FAILED) {
        // Invalid arguments are a result the model can read and correct, not a protocol error (MCP 2025-11-25).
        return { isError: true, content: [{ type: "text", text: err.message }], _meta: { [ERROR_META]: wire } };
      }
      if (err.code === ErrorCode.UNKNOWN_TOOL || err.code === ErrorCode.BAD_REQUEST) {
        throw new RpcError(McpErrorCode.InvalidParams, err.message, { [ERROR_META]: wire });
      }
      throw new RpcError(McpErrorCode.InternalError, `${params.name}: ${err.message} (${err.code})`, { [ERROR_META]: wire });
    } finally {
      clientSignal?.removeEventListener("abort", onClientGone);
      this.#running.delete(k);
    }
  }
}

/**
 * A JSON-RPC error to answer with. Not the SDK's McpError, whose message carries an "MCP error <code>:"
 * prefix that the SDK's server would send on, and the client's SDK prefix again.
 */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

/** The list_changed notification of one kind of change. */
export function listChanged(server: Server, change: CatalogChange): Promise<void> {
  if (change === "tools") return server.sendToolListChanged();
  if (change === "resources") return server.sendResourceListChanged();
  return server.sendPromptListChanged();
}

/** A call running here: where to send its cancel. */
interface Running {
  readonly backend: string;
  /** Its toolbus request id (Toolbus-Request-Id), which a CancelRequest names. */
  readonly requestId: string;
}

const key = (session: string, requestId: string | number): string => `${session}\u0000${typeof requestId}:${requestId}`;
