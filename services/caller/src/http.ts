import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode as McpErrorCode, McpError, type CallToolResult as McpCallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { McpHttpBackendConfig } from "@toolbus/config";
import type { ForwardedMcpMethod } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";
import { Agent } from "undici";
import { ClientEndpoint, type CallOptions, type EndpointEvents } from "./endpoint.js";
import {
  EndpointDownError,
  LeanHttpTransport,
  SessionRefusedError,
  classify,
  clip,
  guardedFetch,
  httpTarget,
  portOf,
  tooLargeAnswer,
  within,
} from "@toolbus/mcp-http";

/** The SDK's words when it gives up re-opening its GET stream: the server is gone. */
const GAVE_UP = /Maximum reconnection attempts/;

/**
 * A streamable HTTP MCP server: one keep-alive connection pool and one MCP session. When the server
 * forgets the session (a restart, an expiry) — whether it says so with the spec's 404 or with a 400
 * naming the session, as the reference server does — a new session is started, once for every call
 * that hit the old one, and each such call is sent once more within its time.
 */
export class HttpEndpoint extends ClientEndpoint {
  readonly #agent: Agent;
  /** The URL without its userinfo, which goes into an Authorization header instead. */
  readonly #url: URL;
  readonly #headers: Record<string, string>;
  /** Which MCP client transport sessions use. */
  readonly transportKind: "lean" | "sdk";

  constructor(
    id: string,
    config: McpHttpBackendConfig,
    url: string,
    /** The most bytes one response may have (about the NATS max payload: a larger result cannot be sent on). */
    private readonly maxResponseBytes: number,
    log: Logger,
    events: EndpointEvents,
  ) {
    super(id, log, config.connectTimeoutMs, events);
    // A replaced session stays open until the calls out on it are done (each learns its own fate).
    this.retireAfterMs = config.callTimeoutMs;
    this.#agent = new Agent({ connections: config.connections, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });
    this.transportKind = config.transport;
    this.leanCalls = config.calls === "lean";
    ({ url: this.#url, headers: this.#headers } = httpTarget(url, config.headers));
  }

  protected createTransport(): Transport {
    // The GET stream's failures never reach a call: a session the server forgot is noticed here, and
    // replaced before the next call fails on it.
    const onSessionError = (transport: Transport) => (status: number, body: string, method: string) => {
      if (method !== "GET") return;
      const client = this.client;
      if (client?.transport !== transport) return;
      if (classify(new StreamableHTTPError(status, body), { sessionSent: true }).sessionLost) {
        this.reset(client, `MCP session lost (HTTP ${status} on the event stream)`).catch((err: unknown) =>
          this.log.error({ endpoint: this.id, err }, "could not replace the MCP session"),
        );
      }
    };
    if (this.transportKind === "lean") {
      // A copy of the URL: a move must not redirect an old session's requests.
      const lean: LeanHttpTransport = new LeanHttpTransport(new URL(this.#url), {
        dispatcher: this.#agent,
        headers: this.#headers,
        maxResponseBytes: this.maxResponseBytes,
        onTooLarge: (id, seen) => lean.onmessage?.(tooLargeAnswer(id, seen, this.maxResponseBytes)),
        onSessionError: (status, body, method) => onSessionError(lean)(status, body, method),
      });
      return lean;
    }
    // A copy: the SDK keeps the URL it is given, and a move must not redirect an old session's requests.
    const transport: StreamableHTTPClientTransport = new StreamableHTTPClientTransport(new URL(this.#url), {
      fetch: guardedFetch({
        agent: this.#agent,
        maxResponseBytes: this.maxResponseBytes,
        // The SDK reads an SSE answer on its own; a pending call would hear of the cut only at its
        // timeout. Answer it now, as the server would have, with an error of ours.
        onTooLarge: (id, seen) => transport.onmessage?.(tooLargeAnswer(id, seen, this.maxResponseBytes)),
        // The GET stream's failures never reach a call: a session the server forgot is noticed here,
        // and replaced before the next call fails on it.
        onSessionError: (status, body, method) => onSessionError(transport)(status, body, method),
      }),
      requestInit: { headers: this.#headers },
    });
    return transport;
  }

  /** The port this endpoint's server listens on now. */
  get port(): number {
    return portOf(this.#url);
  }

  /**
   * The server was found on another port (by the health prober): new sessions go there; the current
   * one, if any, is replaced now (calls still out on it finish where they are).
   */
  moveTo(port: number): void {
    if (port === this.port) return;
    this.log.info({ endpoint: this.id, oldPort: this.port, newPort: port }, "backend endpoint moved to another port; reconnecting there");
    this.#url.port = String(port);
    if (this.client)
      void this.reset(this.client, "backend endpoint moved").catch((err: unknown) => this.log.error({ endpoint: this.id, err }, "could not reconnect"));
    else this.wake();
  }

  protected override transportError(client: Client, err: Error): void {
    if (GAVE_UP.test(err.message)) this.markDown(client, "backend endpoint unreachable (its event stream could not be re-opened)");
    else super.transportError(client, err);
  }

  override callTool(name: string, args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult> {
    return this.#withSession(options.maxTotalMs, options.signal, (left) =>
      super.callTool(name, args, { ...options, timeoutMs: Math.min(options.timeoutMs, left), maxTotalMs: left }),
    );
  }

  override listTools(timeoutMs: number): Promise<Tool[]> {
    return this.#withSession(timeoutMs, undefined, (left) => super.listTools(left));
  }

  override request(method: ForwardedMcpMethod, params: Record<string, unknown>, timeoutMs: number, signal: AbortSignal): Promise<Record<string, unknown>> {
    return this.#withSession(timeoutMs, signal, (left) => super.request(method, params, left, signal));
  }

  /**
   * Run `request` on the current session. If the server answers that it forgot the session, start one
   * new session (shared by every request that hit the old one) and send it once more within the time
   * left. A fresh session refused the same way means the server is failing: SessionRefusedError.
   */
  async #withSession<T>(budgetMs: number, signal: AbortSignal | undefined, request: (leftMs: number) => Promise<T>): Promise<T> {
    const started = performance.now();
    const left = (): number => Math.floor(budgetMs - (performance.now() - started));
    for (let attempt = 1; ; attempt++) {
      const used = this.client;
      const sessionSent = (used?.transport as { sessionId?: string } | undefined)?.sessionId !== undefined;
      // A re-send with no time left would only start the tool to cancel it at once.
      if (attempt > 1 && left() <= 0) throw new McpError(McpErrorCode.RequestTimeout, "the deadline passed while starting a new MCP session");
      try {
        return await request(Math.max(1, left()));
      } catch (err) {
        const fault = classify(err, { sessionSent });
        if (fault.unreachable) this.markDown(used, `backend endpoint unreachable (${fault.message})`);
        if (!fault.sessionLost) throw err;
        if (attempt > 1) throw new SessionRefusedError(this.id, (err as StreamableHTTPError).code ?? 0, (err as Error).message);
        await this.#renew(used, (err as StreamableHTTPError).code, left(), signal);
      }
    }
  }

  /** Replace the session `used`, waiting at most `leftMs` (or until `signal` aborts). */
  async #renew(used: Client | undefined, status: number | undefined, leftMs: number, signal: AbortSignal | undefined): Promise<void> {
    const renewed = await within(leftMs, this.reset(used, `MCP session lost (HTTP ${status})`));
    if (signal?.aborted) throw signal.reason;
    if (!renewed) throw new McpError(McpErrorCode.RequestTimeout, "the deadline passed while starting a new MCP session");
    if (!this.live) throw new EndpointDownError(this.id);
  }

  protected override async beforeClose(): Promise<void> {
    // Ending the session politely (DELETE) is best effort: the server may already be gone.
    const transport = this.client?.transport as { terminateSession(): Promise<void> } | undefined;
    if (!transport) return;
    const ended = transport
      .terminateSession()
      .catch((err: unknown) => this.log.debug({ endpoint: this.id, err: clip(String(err)) }, "could not end the MCP session"));
    await within(500, ended);
  }

  override async close(): Promise<void> {
    await super.close();
    await this.#agent.close().catch(() => undefined);
  }
}
