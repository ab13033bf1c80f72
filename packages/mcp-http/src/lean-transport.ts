import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { createParser } from "eventsource-parser";
import type { Dispatcher } from "undici";
import { MAX_BACKEND_TEXT, ResponseTooLargeError } from "./faults.js";
import { discard, readPrefix } from "./undici-body.js";

export interface LeanHttpTransportOptions {
  /** The endpoint's keep-alive pool (an undici Agent or Pool). */
  dispatcher: Dispatcher;
  /** More headers on every request (an Authorization from the URL's userinfo, the backend's headers). */
  headers: Record<string, string>;
  /** The most bytes of one answer (of one event, in an event stream); past it the answer is cut. */
  maxResponseBytes: number;
  /** An answer in an event stream was cut at `maxResponseBytes`: answer its request (the SDK never will). */
  onTooLarge(requestId: string | number, seenBytes: number): void;
  /** A request that carried a session id was answered 4xx: `body` is the (clipped) answer. */
  onSessionError?(status: number, body: string, method: string): void;
  /** Re-opening the server's event stream (GET): delays and how many failures in a row before giving up (the SDK's defaults). */
  reconnect?: { initialMs: number; maxMs: number; growFactor: number; maxRetries: number };
}

const ACCEPT_POST = "application/json, text/event-stream";
const MAX_REDIRECTS = 3;
const DELETE_TIMEOUT_MS = 2_000;

/**
 * MCP's streamable HTTP transport (client side) on undici's dispatcher API directly: no fetch, no
 * WHATWG streams, no per-message zod on the hot path. The SDK's StreamableHTTPClientTransport spends
 * about a millisecond of CPU per call in those; this one, a small fraction. It speaks the same protocol
 * and fails the same way (StreamableHTTPError with the status, so a lost session is told apart as
 * before): POST per message, the answer as JSON or as an event stream, `mcp-session-id` and
 * `mcp-protocol-version` headers, a GET event stream for the server's own messages (re-opened with
 * backoff, given up with the SDK's words), DELETE to end the session. It does not resume cut streams
 * (`Last-Event-ID`): a request whose stream was cut fails, as toolbus's caller expects.
 */
export class LeanHttpTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  sessionId?: string;
  #protocolVersion: string | undefined;
  readonly #url: URL;
  readonly #path: string;
  readonly #origin: string;
  #closed = false;
  #started = false;
  /** Every request out (POST streams, the GET stream): aborted on close. */
  readonly #inFlight = new Set<AbortController>();
  /** The POST whose answer stream belongs to a request id (JSON text): cut when that request is cancelled. */
  readonly #streams = new Map<string, AbortController>();
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** The GET stream's request, while one is out. */
  #eventStream: AbortController | undefined;
  readonly #reconnect: NonNullable<LeanHttpTransportOptions["reconnect"]>;

  constructor(
    url: URL,
    private readonly options: LeanHttpTransportOptions,
  ) {
    this.#url = new URL(url);
    this.#origin = this.#url.origin;
    this.#path = this.#url.pathname + this.#url.search;
    this.#reconnect = options.reconnect ?? { initialMs: 1_000, maxMs: 30_000, growFactor: 1.5, maxRetries: 2 };
  }

  /** Requests still out, the server's event stream apart, and answer streams held by request id (both back to 0 when idle). */
  get pending(): { requests: number; streams: number } {
    return { requests: this.#inFlight.size - (this.#eventStream ? 1 : 0), streams: this.#streams.size };
  }

  async start(): Promise<void> {
    if (this.#started) throw new Error("LeanHttpTransport already started");
    this.#started = true;
  }

  setProtocolVersion(version: string): void {
    this.#protocolVersion = version;
  }

  get protocolVersion(): string | undefined {
    return this.#protocolVersion;
  }

  #headers(extra: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { ...this.options.headers, ...extra };
    if (this.sessionId) headers["mcp-session-id"] = this.sessionId;
    if (this.#protocolVersion) headers["mcp-protocol-version"] = this.#protocolVersion;
    return headers;
  }

  /**
   * One request, following a server's redirect within the same origin (a few hops), as the SDK's
   * transport does: 307/308 for any method, 301/302/303 for a GET (an app mounted at `/mcp` that
   * redirects to `/mcp/`, say).
   */
  async #request(options: {
    method: "POST" | "GET" | "DELETE";
    headers: Record<string, string>;
    body?: string;
    signal: AbortSignal;
  }): Promise<Dispatcher.ResponseData> {
    let path = this.#path;
    for (let hop = 0; ; hop++) {
      const response = await this.options.dispatcher.request({ origin: this.#origin, path, ...options });
      const status = response.statusCode;
      const follow = status === 307 || status === 308 || (options.method === "GET" && (status === 301 || status === 302 || status === 303));
      const location = header(response.headers, "location");
      if (!follow || !location || hop >= MAX_REDIRECTS) return response;
      const next = new URL(location, new URL(path, this.#origin));
      if (next.origin !== this.#origin) return response;
      discard(response.body);
      path = next.pathname + next.search;
    }
  }

  async send(message: JSONRPCMessage): Promise<void> {
    try {
      await this.#post(message);
    } catch (err) {
      this.onerror?.(err as Error);
      throw err;
    }
  }

  async #post(message: JSONRPCMessage): Promise<void> {
    if (this.#closed) throw new Error("Not connected");
    const body = JSON.stringify(message);
    const m = message as { method?: string; id?: string | number; params?: { requestId?: string | number } };
    // A cancel cuts the answer stream of the request it names: the server stops answering it but may
    // keep the stream open, which would hold a pooled connection for nothing.
    if (m.method === "notifications/cancelled" && m.params?.requestId !== undefined) this.#streams.get(JSON.stringify(m.params.requestId))?.abort();
    const isRequest = m.method !== undefined && m.id !== undefined;
    const key = isRequest ? JSON.stringify(m.id) : undefined;
    const controller = new AbortController();
    this.#inFlight.add(controller);
    if (key !== undefined) this.#streams.set(key, controller);
    let handedOver = false;
    try {
      const response = await this.#request({
        method: "POST",
        headers: this.#headers({ "content-type": "application/json", accept: ACCEPT_POST }),
        body,
        signal: controller.signal,
      });
      const session = header(response.headers, "mcp-session-id");
      if (session) this.sessionId = session;
      if (response.statusCode >= 300) {
        const text = await readPrefix(response.body, MAX_BACKEND_TEXT + 1);
        if (response.statusCode < 500 && response.statusCode >= 400 && this.sessionId !== undefined)
          this.options.onSessionError?.(response.statusCode, text, "POST");
        throw new StreamableHTTPError(response.statusCode, `Error POSTing to endpoint: ${text}`);
      }
      if (response.statusCode === 202 || !isRequest) {
        // Nothing to read here: cut rather than drain (a server may keep such a body open).
        discard(response.body);
        if (m.method === "notifications/initialized") void this.#openEventStream("first");
        return;
      }
      const type = header(response.headers, "content-type") ?? "";
      if (type.startsWith("text/event-stream")) {
        // Read on its own, as the SDK does: send() resolves once the request is out.
        handedOver = true;
        void this.#readEvents(response.body, controller, m.id).finally(() => this.#done(controller, key));
        return;
      }
      if (type.startsWith("application/json")) {
        const declared = Number(header(response.headers, "content-length") ?? NaN);
        if (declared > this.options.maxResponseBytes) {
          discard(response.body);
          throw new ResponseTooLargeError(declared, this.options.maxResponseBytes);
        }
        const text = await readAll(response.body, this.options.maxResponseBytes);
        for (const msg of jsonRpcMessages(JSON.parse(text))) this.onmessage?.(msg);
        return;
      }
      discard(response.body);
      throw new StreamableHTTPError(-1, `Unexpected content type: ${type}`);
    } finally {
      if (!handedOver) this.#done(controller, key);
    }
  }

  #done(controller: AbortController, key: string | undefined): void {
    this.#inFlight.delete(controller);
    if (key !== undefined && this.#streams.get(key) === controller) this.#streams.delete(key);
  }

  /**
   * The messages of an event stream, each handed on as it completes. An event over the size limit cuts
   * the stream and answers its request with an error of ours; a stream cut otherwise just ends (the
   * request's own timer, or the server's close of the session, decides what it means).
   */
  async #readEvents(
    body: Dispatcher.ResponseData["body"],
    controller: AbortController,
    requestId: string | number | undefined,
  ): Promise<"too large" | undefined> {
    const max = this.options.maxResponseBytes;
    // Bytes since the last event boundary (a blank line): each event is bounded, not the stream, which
    // may run for the session's life (keep-alive comments included).
    let sinceBoundary = 0;
    const parser = createParser({
      onEvent: (event) => {
        if (!event.data || (event.event !== undefined && event.event !== "message")) return;
        let messages: JSONRPCMessage[];
        try {
          messages = jsonRpcMessages(JSON.parse(event.data));
        } catch (err) {
          // One bad event is reported and skipped; the stream goes on.
          this.onerror?.(new Error(`a server event is not a JSON-RPC message: ${(err as Error).message}`));
          return;
        }
        for (const msg of messages) this.onmessage?.(msg);
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body) {
        const buf = chunk as Buffer;
        const boundary = buf.lastIndexOf("\n\n");
        sinceBoundary = boundary === -1 ? sinceBoundary + buf.length : buf.length - boundary - 2;
        parser.feed(decoder.decode(buf, { stream: true }));
        if (sinceBoundary > max) {
          controller.abort();
          if (requestId !== undefined) this.options.onTooLarge(requestId, sinceBoundary);
          return "too large";
        }
      }
    } catch (err) {
      if (!controller.signal.aborted && !this.#closed) this.onerror?.(new Error(`SSE stream disconnected: ${(err as Error).message}`));
    }
    return undefined;
  }

  /**
   * The GET stream on which the server sends messages of its own (list_changed, resource updates). As
   * with the SDK's transport: a first open that fails is reported and not retried (many servers have no
   * such stream and say so with a 404 or 400, not the spec's 405); a stream that was open and ends or
   * fails is re-opened with backoff, and given up after `maxRetries` failures in a row.
   */
  async #openEventStream(attempt: number | "first"): Promise<void> {
    if (this.#closed) return;
    const controller = new AbortController();
    this.#inFlight.add(controller);
    this.#eventStream = controller;
    let failed: Error | undefined;
    let cut = false;
    try {
      const response = await this.#request({ method: "GET", headers: this.#headers({ accept: "text/event-stream" }), signal: controller.signal });
      if (response.statusCode === 405) {
        // The server has no stream for us: fine, it sends nothing unasked.
        discard(response.body);
        return;
      }
      if (response.statusCode >= 300) {
        const text = await readPrefix(response.body, MAX_BACKEND_TEXT + 1);
        if (response.statusCode >= 400 && response.statusCode < 500 && this.sessionId !== undefined)
          this.options.onSessionError?.(response.statusCode, text, "GET");
        throw new StreamableHTTPError(response.statusCode, `Failed to open SSE stream: ${text}`);
      }
      attempt = 0;
      cut = (await this.#readEvents(response.body, controller, undefined)) === "too large";
      if (cut) this.onerror?.(new Error(`an event on the server's stream is over ${this.options.maxResponseBytes} bytes; re-opening it`));
    } catch (err) {
      failed = err as Error;
    } finally {
      this.#inFlight.delete(controller);
      if (this.#eventStream === controller) this.#eventStream = undefined;
    }
    if (this.#closed || (controller.signal.aborted && !cut)) return;
    if (failed) this.onerror?.(attempt === "first" ? failed : new Error(`Failed to reconnect SSE stream: ${failed.message}`));
    if (failed && attempt === "first") return;
    // The stream ended or failed: open it again, with backoff, and give up (with the SDK's words, which
    // the endpoint recognises) after too many failures in a row.
    const next = failed ? (attempt as number) + 1 : 0;
    if (next >= this.#reconnect.maxRetries) {
      this.onerror?.(new Error(`Maximum reconnection attempts (${this.#reconnect.maxRetries}) exceeded.`));
      return;
    }
    const delay = Math.min(this.#reconnect.initialMs * this.#reconnect.growFactor ** next, this.#reconnect.maxMs);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => void this.#openEventStream(next), delay);
    this.#reconnectTimer.unref();
  }

  /** End the session on the server (DELETE); a server that does not allow it (405) is fine. */
  async terminateSession(): Promise<void> {
    if (!this.sessionId) return;
    // Tracked and bounded: a server that never answers must not hold up a close (or the pool's).
    const controller = new AbortController();
    this.#inFlight.add(controller);
    const timer = setTimeout(() => controller.abort(), DELETE_TIMEOUT_MS);
    try {
      const response = await this.#request({ method: "DELETE", headers: this.#headers({}), signal: controller.signal });
      discard(response.body);
      if (response.statusCode >= 300 && response.statusCode !== 405)
        throw new StreamableHTTPError(response.statusCode, `Failed to terminate session: HTTP ${response.statusCode}`);
      this.sessionId = undefined;
    } catch (err) {
      this.onerror?.(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
      this.#inFlight.delete(controller);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    for (const controller of this.#inFlight) controller.abort();
    this.#inFlight.clear();
    this.#streams.clear();
    this.onclose?.();
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** JSON-RPC messages from a parsed answer (one, or a batch), each checked for the shape the SDK relies on. */
function jsonRpcMessages(parsed: unknown): JSONRPCMessage[] {
  const list = Array.isArray(parsed) ? parsed : [parsed];
  for (const msg of list) {
    if (!isJsonRpcMessage(msg))
      throw new StreamableHTTPError(-1, `the server sent something that is not a JSON-RPC message: ${JSON.stringify(msg).slice(0, 200)}`);
  }
  return list as JSONRPCMessage[];
}

/**
 * The shape of a JSON-RPC 2.0 message, checked by hand: the SDK's zod schema for it costs more than
 * the rest of reading a message, and the SDK's Client checks each message it handles again anyway.
 */
export function isJsonRpcMessage(msg: unknown): msg is JSONRPCMessage {
  const m = msg as { jsonrpc?: unknown; method?: unknown; id?: unknown; result?: unknown; error?: unknown } | null;
  return (
    m !== null && typeof m === "object" && m.jsonrpc === "2.0" && (typeof m.method === "string" || (m.id !== undefined && ("result" in m || "error" in m)))
  );
}

/** A whole body as text, failing past `max` bytes (the rest is not read). */
async function readAll(body: Dispatcher.ResponseData["body"], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > max) {
      discard(body);
      throw new ResponseTooLargeError(size, max);
    }
    chunks.push(chunk as Buffer);
  }
  return chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8");
}
