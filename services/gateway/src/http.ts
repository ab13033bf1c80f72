import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import { timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import { SUPPORTED_PROTOCOL_VERSIONS, type JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { GatewayConfig } from "@toolbus/config";
import type { Logger, Metrics } from "@toolbus/runtime";
import type { CatalogChange } from "./catalog.js";
import { listChanged, type GatewayCore } from "./mcp-server.js";
import type { SessionStore } from "./sessions.js";

/** Without the header, a client speaks the version before the header existed (MCP transport spec). */
const ASSUMED_VERSION = "2025-03-26";
/** Comments on an idle event stream, so proxies and load balancers do not cut it. */
const KEEPALIVE_MS = 15_000;

/** One POSTed request waiting for its answer: a JSON body, or an event stream when progress may come first. */
interface Exchange {
  readonly res: ServerResponse;
  readonly sse: boolean;
}

/**
 * The SDK Server's transport for one MCP session at this replica: messages arrive from the HTTP
 * handler; the Server's answers go to the POST that asked (by JSON-RPC id), its progress to that POST's
 * event stream, and anything else (list_changed) to the session's GET stream if the client opened one.
 */
class SessionTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: { requestInfo?: { headers: IncomingMessage["headers"] } }) => void;
  readonly #exchanges = new Map<string | number, Exchange>();
  #stream: ServerResponse | undefined;
  #keepalive: NodeJS.Timeout | undefined;

  constructor(
    readonly sessionId: string,
    /** tools/call, answered apart from the SDK's Server (GatewayCore.answerToolCall). */
    private readonly toolCall?: (
      message: JSONRPCMessage & { id: string | number },
      notify: (n: JSONRPCMessage) => Promise<void>,
      traceparent: string | undefined,
    ) => Promise<JSONRPCMessage>,
  ) {}

  async start(): Promise<void> {}

  /** Deliver a client's request; its answer ends `res`. */
  request(message: JSONRPCMessage & { id: string | number }, res: ServerResponse, sse: boolean, headers: IncomingMessage["headers"]): void {
    if (sse) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "mcp-session-id": this.sessionId });
      res.flushHeaders();
    }
    this.#exchanges.set(message.id, { res, sse });
    res.once("close", () => {
      if (this.#exchanges.get(message.id)?.res === res) this.#exchanges.delete(message.id);
    });
    if (this.toolCall && (message as { method?: string }).method === "tools/call") {
      const id = message.id;
      const traceparent = typeof headers.traceparent === "string" ? headers.traceparent : undefined;
      void this.toolCall(message, (n) => this.send(n, { relatedRequestId: id }), traceparent).then((answer) => this.send(answer));
      return;
    }
    this.onmessage?.(message, { requestInfo: { headers } });
  }

  deliver(message: JSONRPCMessage, headers: IncomingMessage["headers"]): void {
    this.onmessage?.(message, { requestInfo: { headers } });
  }

  /** The client's GET: the stream for messages not tied to a request. A second one replaces the first. */
  openStream(res: ServerResponse): void {
    this.#endStream();
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "mcp-session-id": this.sessionId });
    res.flushHeaders();
    this.#stream = res;
    this.#keepalive = setInterval(() => res.write(": keepalive\n\n"), KEEPALIVE_MS);
    this.#keepalive.unref();
    res.once("close", () => {
      if (this.#stream === res) this.#endStream();
    });
  }

  get streaming(): boolean {
    return this.#stream !== undefined;
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    const m = message as { id?: string | number; method?: string };
    if (m.method === undefined && m.id !== undefined) {
      const exchange = this.#exchanges.get(m.id);
      if (!exchange) return; // the client went away; nobody to answer
      this.#exchanges.delete(m.id);
      const body = JSON.stringify(message);
      if (exchange.sse) exchange.res.end(`event: message\ndata: ${body}\n\n`);
      else exchange.res.writeHead(200, { "content-type": "application/json", "mcp-session-id": this.sessionId }).end(body);
      return;
    }
    const related = options?.relatedRequestId !== undefined ? this.#exchanges.get(options.relatedRequestId) : undefined;
    if (related?.sse) related.res.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`);
    else this.#stream?.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`);
  }

  #endStream(): void {
    clearInterval(this.#keepalive);
    this.#stream?.end();
    this.#stream = undefined;
  }

  async close(): Promise<void> {
    this.#endStream();
    for (const { res } of this.#exchanges.values()) res.destroy();
    this.#exchanges.clear();
    this.onclose?.();
  }
}

/** What a bearer token may reach; `name` goes into the session record. */
interface Access {
  name: string;
  allowed: (backend: string) => boolean;
}

/** The front door over streamable HTTP (MCP 2025-11-25 transport), one path on one port. */
export class HttpFrontDoor {
  readonly #server: HttpServer;
  /** Sessions this replica holds a Server for (created at initialize here, or on first use of one started elsewhere). */
  readonly #open = new Map<string, { server: Server; transport: SessionTransport }>();
  readonly #tokens: { name: string; value: Buffer; allowed: (b: string) => boolean }[];
  #sweep: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: GatewayConfig,
    private readonly core: GatewayCore,
    private readonly sessions: SessionStore,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    // Read now: a missing token file stops the start with its name, not the first request.
    this.#tokens = config.tokens.map((t) => ({
      name: t.name,
      value: Buffer.from(t.token.reveal()),
      allowed: t.backends.includes("*") ? () => true : (b: string) => t.backends.includes(b),
    }));
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, "gateway request failed");
        if (!res.headersSent) this.#refuse(res, 500, -32603, "internal error");
        else res.destroy();
      });
    });
    this.#server.on("connection", (socket) => {
      this.metrics.gatewayConnections.labels("http").inc();
      socket.once("close", () => this.metrics.gatewayConnections.labels("http").dec());
    });
    core.catalog.onChange((change) => this.#changed(change));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "EADDRINUSE"
            ? new Error(
                `the gateway cannot listen on ${this.config.host}:${this.config.port}: the port is in use (set gateway.port, or gateway.enabled: false)`,
              )
            : err,
        ),
      );
      this.#server.listen(this.config.port, this.config.host, () => resolve());
    });
    this.#sweep = setInterval(() => this.#forgetIdle(), 60_000);
    this.#sweep.unref();
    return (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const { server } of this.#open.values()) await server.close().catch(() => undefined);
    this.#open.clear();
    this.#server.closeAllConnections();
    await closed;
  }

  /** Tell every client with an open event stream that a list changed. */
  #changed(change: CatalogChange): void {
    for (const { server, transport } of this.#open.values()) if (transport.streaming) void listChanged(server, change).catch(() => undefined);
  }

  /** Close the servers of sessions unused for a whole TTL (the store forgets them first). */
  #forgetIdle(): void {
    this.sessions.sweep();
    for (const id of [...this.#open.keys()]) if (!this.sessions.holds(id)) this.#forget(id);
  }

  #forget(id: string): void {
    const open = this.#open.get(id);
    if (!open) return;
    this.#open.delete(id);
    void open.server.close().catch(() => undefined);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.url ?? "/";
    const query = target.indexOf("?");
    if ((query === -1 ? target : target.slice(0, query)) !== this.config.path) {
      return this.#refuse(res, 404, -32600, `not found: the MCP endpoint is ${this.config.path}`);
    }
    // DNS rebinding: a browser page may only reach us from an origin the config allows.
    const origin = req.headers.origin;
    if (origin !== undefined && !this.config.allowedOrigins.includes(origin)) return this.#refuse(res, 403, -32600, `origin ${origin} is not allowed`);
    if (origin !== undefined) {
      res.setHeader("access-control-allow-origin", origin);
      res.setHeader("access-control-expose-headers", "mcp-session-id");
      res.setHeader("vary", "origin");
    }
    if (req.method === "OPTIONS" && origin !== undefined) {
      res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, DELETE",
        "access-control-allow-headers": "authorization, content-type, mcp-session-id, mcp-protocol-version, last-event-id",
        "access-control-max-age": "600",
      });
      return void res.end();
    }
    const access = this.#authorize(req);
    if (!access) {
      res.setHeader("www-authenticate", 'Bearer realm="toolbus"');
      return this.#refuse(res, 401, -32600, "a valid bearer token is required");
    }
    const version = req.headers["mcp-protocol-version"];
    if (typeof version === "string" && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      return this.#refuse(res, 400, -32600, `unsupported MCP-Protocol-Version ${version}; supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")}`);
    }
    if (req.method === "POST") return this.#post(req, res, access);
    if (req.method === "GET") return this.#get(req, res, access);
    if (req.method === "DELETE") return this.#delete(req, res, access);
    res.setHeader("allow", "GET, POST, DELETE");
    return this.#refuse(res, 405, -32600, `method ${req.method} not allowed`);
  }

  #authorize(req: IncomingMessage): Access | undefined {
    if (this.#tokens.length === 0) return { name: "", allowed: () => true };
    const header = req.headers.authorization;
    const m = typeof header === "string" ? /^Bearer\s+(.+)$/i.exec(header) : null;
    if (!m) return undefined;
    const given = Buffer.from(m[1]!.trim());
    const token = this.#tokens.find((t) => t.value.length === given.length && timingSafeEqual(t.value, given));
    return token && { name: token.name, allowed: token.allowed };
  }

  /** The session a request names, open at this replica (made here if another replica started it). */
  async #session(req: IncomingMessage, res: ServerResponse, access: Access): Promise<{ server: Server; transport: SessionTransport } | undefined> {
    const id = req.headers["mcp-session-id"];
    if (typeof id !== "string" || id === "") {
      this.#refuse(res, 400, -32600, "Bad Request: the Mcp-Session-Id header is required (initialize first)");
      return undefined;
    }
    const record = await this.sessions.get(id);
    // Another token's session is as unknown as a forgotten one.
    if (!record || record.token !== access.name) {
      this.#refuse(res, 404, -32001, "Session not found");
      // Ended at another replica (or expired): this one lets go of it too.
      if (!record) this.#forget(id);
      return undefined;
    }
    return this.#open.get(id) ?? this.#openSession(id, access, req);
  }

  async #openSession(id: string, access: Access, req: IncomingMessage): Promise<{ server: Server; transport: SessionTransport }> {
    const traceparent = req.headers.traceparent;
    const caller = { session: id, allowed: access.allowed, ...(typeof traceparent === "string" ? { traceparent } : {}) };
    // Each call carries its own request's trace context into the bus.
    const transport = new SessionTransport(id, (message, notify, tp) =>
      this.core.answerToolCall(tp ? { ...caller, traceparent: tp } : caller, message, notify),
    );
    const server = this.core.createServer(caller);
    await server.connect(transport);
    const open = { server, transport };
    this.#open.set(id, open);
    return open;
  }

  async #post(req: IncomingMessage, res: ServerResponse, access: Access): Promise<void> {
    const type = req.headers["content-type"] ?? "";
    if (!type.toLowerCase().startsWith("application/json")) return this.#refuse(res, 415, -32600, "Content-Type must be application/json");
    const body = await readBody(req, this.config.maxRequestBytes);
    if (body === undefined) return this.#refuse(res, 413, -32600, `request body over ${this.config.maxRequestBytes} bytes`);
    let message: unknown;
    try {
      message = JSON.parse(body);
    } catch {
      return this.#refuse(res, 400, -32700, "Parse error: the body is not JSON");
    }
    if (Array.isArray(message)) return this.#refuse(res, 400, -32600, "JSON-RPC batches are not supported (MCP 2025-06-18 and later)");
    const m = message as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: { _meta?: { progressToken?: unknown } } } | null;
    if (m === null || typeof m !== "object" || m.jsonrpc !== "2.0") return this.#refuse(res, 400, -32600, "Invalid Request: not a JSON-RPC 2.0 message");
    const isRequest = typeof m.method === "string" && (typeof m.id === "string" || typeof m.id === "number");
    if (m.method === "initialize" && isRequest) {
      const asked = (m.params as { protocolVersion?: unknown } | undefined)?.protocolVersion;
      const id = await this.sessions.create({
        token: access.name,
        protocolVersion: typeof asked === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(asked) ? asked : ASSUMED_VERSION,
        createdAt: Date.now(),
      });
      const open = await this.#openSession(id, access, req);
      open.transport.request(m as JSONRPCMessage & { id: string | number }, res, false, req.headers);
      return;
    }
    const open = await this.#session(req, res, access);
    if (!open) return;
    if (!isRequest) {
      // A notification or a response: accepted, nothing to answer.
      res.writeHead(202).end();
      open.transport.deliver(m as JSONRPCMessage, req.headers);
      return;
    }
    // Progress can only come to a request that asked for it; such a request is answered as an event stream.
    const sse = m.params?._meta?.progressToken !== undefined && acceptsEvents(req);
    open.transport.request(m as JSONRPCMessage & { id: string | number }, res, sse, req.headers);
  }

  async #get(req: IncomingMessage, res: ServerResponse, access: Access): Promise<void> {
    if (!acceptsEvents(req)) return this.#refuse(res, 406, -32600, "Not Acceptable: the GET stream needs Accept: text/event-stream");
    const open = await this.#session(req, res, access);
    if (!open) return;
    this.metrics.gatewayConnections.labels("stream").inc();
    res.once("close", () => this.metrics.gatewayConnections.labels("stream").dec());
    open.transport.openStream(res);
  }

  async #delete(req: IncomingMessage, res: ServerResponse, access: Access): Promise<void> {
    const open = await this.#session(req, res, access);
    if (!open) return;
    const id = req.headers["mcp-session-id"] as string;
    await this.sessions.delete(id);
    res.writeHead(200).end();
    this.#forget(id);
  }

  #refuse(res: ServerResponse, status: number, code: number, message: string): void {
    this.metrics.gatewayRequests.labels("http", String(status)).inc();
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } }));
  }
}

function acceptsEvents(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? "";
  return accept.includes("text/event-stream") || accept.includes("*/*");
}

/** The body as text, or undefined past `max` bytes (the rest is not read). */
function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (declared > max) {
      req.resume();
      return resolve(undefined);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.removeAllListeners("data");
        req.resume();
        return resolve(undefined);
      }
      chunks.push(chunk);
    });
    req.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
  });
}
