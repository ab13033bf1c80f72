import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  GetPromptResultSchema,
  ListPromptsResultSchema,
  ListResourcesResultSchema,
  ListResourceTemplatesResultSchema,
  ReadResourceResultSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
  type CallToolResult as McpCallToolResult,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import type { ForwardedMcpMethod, ToolProgress } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";
import { EndpointDownError } from "@toolbus/mcp-http";
import { LeanCalls, progressOf } from "./lean-calls.js";

/** One way to reach a backend: a stdio child process or an HTTP server. */
export interface Endpoint {
  readonly id: string;
  /** Initialized and not known to be down. */
  readonly live: boolean;
  /** Calls in flight on this endpoint right now. */
  readonly inFlight: number;
  /** The child process of a stdio endpoint (null while it is down); undefined for HTTP. */
  readonly pid?: number | null;
  /** Ms until the next reconnect attempt while down (for `retryAfterMs`); undefined while live. */
  retryAfterMs(): number | undefined;
  start(): void;
  /** A hint that the backend is back (the health prober says so): reconnect now if down, not when the backoff says. */
  wake(): void;
  callTool(name: string, args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult>;
  listTools(timeoutMs: number): Promise<Tool[]>;
  /** An MCP request besides tools (resources, prompts), passed on as it is; resolves with its result. */
  request(method: ForwardedMcpMethod, params: Record<string, unknown>, timeoutMs: number, signal: AbortSignal): Promise<Record<string, unknown>>;
  /** An MCP ping; resolves with its round trip in ms (a stdio child's health, which only its caller can probe). */
  ping(timeoutMs: number): Promise<number>;
  close(): Promise<void>;
}

export interface CallOptions {
  /**
   * The MCP request timeout (adaptive, or the budget left); when it fires the SDK sends
   * notifications/cancelled. Progress notifications restart it ...
   */
  timeoutMs: number;
  /** ... but never beyond this (the request's deadline). */
  maxTotalMs: number;
  /**
   * The call's own signal: it aborts at the request's deadline whatever progress did, on a client's
   * cancel, or when a stop runs out of grace. The SDK then tells the backend (notifications/cancelled).
   */
  signal: AbortSignal;
  /** The backend's progress notifications, for a client that asked to hear them. */
  onProgress?: (progress: ToolProgress) => void;
}

export interface EndpointEvents {
  /** The endpoint became live (again): the caller refreshes the tool list from it. */
  onLive(endpoint: Endpoint): void;
  /** The server said its tools changed. */
  onToolsChanged(endpoint: Endpoint): void;
  /** The server said a resource (`uri`) or its list of resources changed: cached results may be stale. */
  onResourcesChanged(endpoint: Endpoint, uri: string | undefined): void;
}

/** Asking for progress (a progress token) is what lets the SDK restart the timer on each notification. */
const ignoreProgress = (): void => undefined;

/** The result schema of each MCP request a caller passes on. */
const RESULT_SCHEMAS = {
  "resources/list": ListResourcesResultSchema,
  "resources/templates/list": ListResourceTemplatesResultSchema,
  "resources/read": ReadResourceResultSchema,
  "prompts/list": ListPromptsResultSchema,
  "prompts/get": GetPromptResultSchema,
} as const;

/** Backoff between reconnects: 100 ms doubling to 10 s, reset once a connection has stayed up. */
export class Backoff {
  #attempt = 0;
  constructor(
    private readonly initialMs = 100,
    private readonly maxMs = 10_000,
  ) {}
  next(): number {
    const ms = Math.min(this.maxMs, this.initialMs * 2 ** this.#attempt);
    this.#attempt++;
    // ±20% jitter so a fleet of callers does not reconnect in lockstep.
    return Math.round(ms * (0.8 + Math.random() * 0.4));
  }
  /** No failure since the last success (or since it was made). */
  get idle(): boolean {
    return this.#attempt === 0;
  }
  reset(): void {
    this.#attempt = 0;
  }
}

/**
 * What stdio and HTTP endpoints share: one MCP client at a time, connected with a timeout, a
 * reconnect loop with backoff after it drops, and an in-flight count for least-loaded choice.
 */
export abstract class ClientEndpoint implements Endpoint {
  protected client: Client | undefined;
  /** Each connection's tools/call path that skips the SDK's request machinery (see lean-calls.ts). */
  readonly #lean = new WeakMap<Client, LeanCalls>();
  /** Calls go through the lean path; false: through the SDK's Client (config `mcp.calls`). */
  protected leanCalls = true;
  #live = false;
  #inFlight = 0;
  #closed = false;
  #reconnectAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #connecting: Promise<void> | undefined;
  /** Since when the endpoint has been without a connection (it starts without one). */
  #downSince = Date.now();
  /** Replaced connections still open for the calls out on them, with the timer that closes them. */
  readonly #retired = new Map<Client, NodeJS.Timeout>();
  protected readonly backoff = new Backoff();
  /** How long a replaced connection stays open for the calls still out on it. */
  protected retireAfterMs = 0;

  constructor(
    readonly id: string,
    protected readonly log: Logger,
    protected readonly connectTimeoutMs: number,
    private readonly events: EndpointEvents,
  ) {}

  get live(): boolean {
    return this.#live;
  }
  get inFlight(): number {
    return this.#inFlight;
  }
  protected get closed(): boolean {
    return this.#closed;
  }

  retryAfterMs(): number | undefined {
    if (this.#live) return undefined;
    return this.#reconnectAt === undefined ? 0 : Math.max(0, this.#reconnectAt - Date.now());
  }

  /** A fresh transport for a fresh connection (a new child process, a new HTTP session). */
  protected abstract createTransport(): Transport;
  /** Called after a client connected; stdio pipes the child's stderr here. */
  protected afterConnect(_transport: Transport): void {}
  /** An error the transport reported outside any request (e.g. on HTTP's GET stream). */
  protected transportError(_client: Client, err: Error): void {
    this.log.debug({ err: err.message, endpoint: this.id }, "MCP transport error");
  }

  start(): void {
    void this.connect();
  }

  wake(): void {
    if (this.#live || this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.connect();
  }

  /** Connect once (concurrent callers share the attempt); on failure schedule the next. */
  protected connect(): Promise<void> {
    this.#connecting ??= this.#connectOnce().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  async #connectOnce(): Promise<void> {
    // Closed, or already connected (a reset reconnected before a scheduled retry fired).
    if (this.#closed || this.client) return;
    this.#reconnectAt = undefined;
    const client = new Client({ name: "toolbus-caller", version: "0.1.0" }, { capabilities: {} });
    const transport = this.createTransport();
    client.onclose = () => this.#dropped(client);
    client.onerror = (err) => this.transportError(client, err);
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => this.events.onToolsChanged(this));
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => this.events.onResourcesChanged(this, n.params.uri));
    client.setNotificationHandler(ResourceListChangedNotificationSchema, async () => this.events.onResourcesChanged(this, undefined));
    try {
      await client.connect(transport, { timeout: this.connectTimeoutMs });
    } catch (err) {
      // A server still starting (one toolbus launched a moment ago, a child still loading) is not news:
      // only an endpoint down for longer than a connect may take is worth a warning.
      const downMs = Date.now() - this.#downSince;
      (downMs > this.connectTimeoutMs ? this.log.warn : this.log.debug).call(
        this.log,
        { endpoint: this.id, err: (err as Error).message, downMs },
        "could not connect to backend endpoint",
      );
      client.onclose = undefined;
      await client.close().catch(() => undefined);
      this.#scheduleReconnect();
      return;
    }
    if (this.#closed) {
      await client.close().catch(() => undefined);
      return;
    }
    this.afterConnect(transport);
    if (this.leanCalls) this.#lean.set(client, new LeanCalls(transport));
    this.client = client;
    this.#live = true;
    const server = client.getServerVersion();
    this.log.info({ endpoint: this.id, server: server?.name, serverVersion: server?.version }, "backend endpoint connected");
    this.events.onLive(this);
  }

  #dropped(client: Client, why = "backend endpoint connection lost"): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.#live = false;
    this.#downSince = Date.now();
    if (this.#closed) return;
    this.log.warn({ endpoint: this.id }, `${why}; reconnecting`);
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#timer) return;
    const wait = this.backoff.next();
    this.#reconnectAt = Date.now() + wait;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.connect();
    }, wait);
    this.#timer.unref();
  }

  /** Close `client` once the calls still out on it had their time (each learns its own fate there). */
  #retire(client: Client): void {
    client.onclose = undefined;
    if (this.#closed) return void client.close().catch(() => undefined);
    const timer = setTimeout(() => {
      this.#retired.delete(client);
      void client.close().catch(() => undefined);
    }, this.retireAfterMs);
    timer.unref();
    this.#retired.set(client, timer);
  }

  /**
   * Drop the connection `failed` (the server forgot its session) and connect afresh at once. Several
   * calls that failed on the same connection share one reconnect: a connection that has already been
   * replaced is left alone (and `why` is logged once).
   */
  protected async reset(failed: Client | undefined, why: string): Promise<void> {
    const client = this.client;
    // Replaced already (join the reconnect under way, if any), down (the reconnect loop and its
    // backoff decide), or closing: nothing to do here.
    if (this.#closed || client !== failed) return this.#connecting;
    if (!client) return;
    // The first loss after a success reconnects at once; a session lost again before any call succeeded
    // on it waits for the backoff, so a server that keeps refusing sessions is not hammered.
    const fresh = this.backoff.idle;
    this.#dropped(client, why);
    this.#retire(client);
    if (fresh) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      return this.connect();
    }
    const wait = Math.max(0, (this.#reconnectAt ?? Date.now()) - Date.now());
    await new Promise((r) => setTimeout(r, wait).unref());
    return this.connect();
  }

  /**
   * The server cannot be reached (refused, unresolvable, the SDK gave up on its stream): mark the
   * endpoint down and let the reconnect loop, with backoff, find out when it is back.
   */
  protected markDown(failed: Client | undefined, why: string): void {
    if (this.#closed || !failed || this.client !== failed) return;
    this.#dropped(failed, why);
    this.#retire(failed);
  }

  async callTool(name: string, args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult> {
    const client = this.client;
    if (!client) throw new EndpointDownError(this.id);
    this.#inFlight++;
    try {
      const lean = this.#lean.get(client);
      const result = lean && !lean.sdkOnly(name) ? await lean.call(name, args, options) : await this.#sdkCall(client, name, args, options);
      // A connection that answers is healthy: the next outage starts its backoff afresh. (Not on a
      // failure: a child that dies on every call must not be respawned at the fastest pace forever.)
      this.backoff.reset();
      return result;
    } finally {
      this.#inFlight--;
    }
  }

  async #sdkCall(client: Client, name: string, args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult> {
    // The request timeout makes the SDK send notifications/cancelled when it fires.
    return (await client.callTool({ name, arguments: args }, undefined, {
      timeout: options.timeoutMs,
      // A backend that reports progress is working, not hung: its idle timer restarts, up to the deadline.
      onprogress: options.onProgress ? (p) => options.onProgress!(progressOf(p)) : ignoreProgress,
      resetTimeoutOnProgress: true,
      maxTotalTimeout: options.maxTotalMs,
      signal: options.signal,
    })) as McpCallToolResult;
  }

  async ping(timeoutMs: number): Promise<number> {
    const client = this.client;
    if (!client) throw new EndpointDownError(this.id);
    const started = performance.now();
    await client.ping({ timeout: timeoutMs });
    return performance.now() - started;
  }

  async listTools(timeoutMs: number): Promise<Tool[]> {
    const client = this.client;
    if (!client) throw new EndpointDownError(this.id);
    const tools: Tool[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor ? { cursor } : {}, { timeout: timeoutMs });
      tools.push(...page.tools);
      cursor = page.nextCursor;
    } while (cursor);
    this.#lean.get(client)?.learn(tools);
    return tools;
  }

  async request(method: ForwardedMcpMethod, params: Record<string, unknown>, timeoutMs: number, signal: AbortSignal): Promise<Record<string, unknown>> {
    const client = this.client;
    if (!client) throw new EndpointDownError(this.id);
    this.#inFlight++;
    try {
      // The SDK checks the result against the method's schema, and sends notifications/cancelled on a timeout or an abort.
      return await client.request({ method, params }, RESULT_SCHEMAS[method], { timeout: timeoutMs, signal });
    } finally {
      this.#inFlight--;
    }
  }

  /** Called as a close begins, while the connection is still up (HTTP ends its session politely). */
  protected async beforeClose(): Promise<void> {}

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.beforeClose();
    // A stop has waited for the calls already: what is still open on a replaced connection goes now
    // (an HTTP one holds its event stream open, and the connection pool waits for it to end).
    for (const [client, timer] of this.#retired) {
      clearTimeout(timer);
      void client.close().catch(() => undefined);
    }
    this.#retired.clear();
    await this.#connecting;
    const client = this.client;
    this.client = undefined;
    this.#live = false;
    if (client) {
      client.onclose = undefined;
      await client.close().catch(() => undefined);
    }
  }
}
