import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/**
 * An LLM server for tests, speaking both wire formats toolbus calls: OpenAI-compatible
 * `POST /v1/chat/completions` and Anthropic `POST /v1/messages`, streamed (SSE) or not. It answers
 * with a canned text (or a tool call), and misbehaves on request, per request, through the
 * `X-Fault` header:
 *
 * - `slow-first-token=<ms>`: wait before the first byte (headers included)
 * - `stall-after=<n>`: send n chunks of a stream, then nothing (the connection stays open)
 * - `chunk-every=<ms>`: wait that long between the chunks of a stream (1 ms otherwise)
 * - `status=<code>[;retry-after=<s>]`: answer that HTTP status with a provider-shaped error body
 * - `malformed-sse`: a stream whose events are not JSON
 * - `reset`: destroy the connection without an answer
 * - `wrong-content-type`: a 200 with `text/html`
 * - `huge=<bytes>`: a completion of that many characters
 * - `tool-call`: answer with a call of the request's first tool (arguments `{"city":"Paris"}`)
 * - `echo-key`: answer 401, quoting the API key it was sent (as some proxies do)
 *
 * Faults can also be queued from the test (`faults.push("status=429;retry-after=2")`): each request
 * takes the next queued one instead of its header, and `always` is taken when both are empty.
 *
 * It counts requests and connections, and the connections a client closed before the answer ended.
 */
export interface LlmFaultStats {
  requests: number;
  /** By route: "openai", "anthropic". */
  byApi: Record<string, number>;
  connections: number;
  /** Responses the client stopped reading (the connection closed before the response ended). */
  abortedByClient: number;
}

export interface LlmFaultServer {
  readonly port: number;
  readonly url: string;
  readonly stats: LlmFaultStats;
  /** The API key it expects (`Authorization: Bearer`, or `x-api-key` for Anthropic); others get 401. Null: any request is let in (as LM Studio does). */
  readonly apiKey: string | null;
  /** Faults for the next requests, one each, in order (X-Fault syntax); they win over the header. */
  readonly faults: string[];
  /** The fault of every request that has none queued and no header (undefined: behave). */
  always: string | undefined;
  /** Every request body received (for checking the translation), the latest last; at most 100 kept. */
  readonly bodies: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export const CANNED_TEXT = "Hello from the fault server.";

interface Fault {
  slowFirstTokenMs?: number;
  stallAfter?: number;
  chunkEveryMs?: number;
  status?: number;
  retryAfter?: string;
  malformedSse?: boolean;
  reset?: boolean;
  wrongContentType?: boolean;
  huge?: number;
  toolCall?: boolean;
  echoKey?: boolean;
}

function parseFault(header: string | undefined): Fault {
  const fault: Fault = {};
  for (const part of (header ?? "")
    .split(";")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [key, value] = part.split("=", 2) as [string, string | undefined];
    if (key === "slow-first-token") fault.slowFirstTokenMs = Number(value);
    else if (key === "stall-after") fault.stallAfter = Number(value);
    else if (key === "chunk-every") fault.chunkEveryMs = Number(value);
    else if (key === "status") fault.status = Number(value);
    else if (key === "retry-after") fault.retryAfter = value;
    else if (key === "malformed-sse") fault.malformedSse = true;
    else if (key === "reset") fault.reset = true;
    else if (key === "wrong-content-type") fault.wrongContentType = true;
    else if (key === "huge") fault.huge = Number(value);
    else if (key === "tool-call") fault.toolCall = true;
    else if (key === "echo-key") fault.echoKey = true;
  }
  return fault;
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** The words of the answer, one per streamed chunk. */
function words(fault: Fault): string[] {
  const text = fault.huge ? "x".repeat(fault.huge) : CANNED_TEXT;
  return fault.huge ? [text] : text.split(/(?<= )/);
}

function firstToolName(body: Record<string, unknown>, api: "openai" | "anthropic"): string {
  const tools = (body.tools as Array<Record<string, unknown>> | undefined) ?? [];
  const first = tools[0];
  if (!first) return "get_weather";
  return api === "openai" ? String((first.function as { name?: unknown } | undefined)?.name ?? "get_weather") : String(first.name ?? "get_weather");
}

export async function startLlmFaultServer(options: { port?: number; apiKey?: string | null } = {}): Promise<LlmFaultServer> {
  const apiKey = options.apiKey === undefined ? "sk-test-fault-server" : options.apiKey;
  const stats: LlmFaultStats = { requests: 0, byApi: {}, connections: 0, abortedByClient: 0 };
  const sockets = new Set<Socket>();
  let sequence = 0;
  const queued: string[] = [];
  const bodies: Array<Record<string, unknown>> = [];
  const control = { always: undefined as string | undefined };

  const server: Server = createServer((req, res) => void handle(req, res));
  server.on("connection", (socket: Socket) => {
    stats.connections += 1;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === "GET" && req.url === "/_stats") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(stats));
      return;
    }
    const api = req.url?.startsWith("/v1/chat/completions") ? "openai" : req.url?.startsWith("/v1/messages") ? "anthropic" : undefined;
    if (req.method !== "POST" || !api) {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "not found" } }));
      return;
    }
    stats.requests += 1;
    stats.byApi[api] = (stats.byApi[api] ?? 0) + 1;
    const body = await readBody(req);
    bodies.push(body);
    if (bodies.length > 100) bodies.shift();
    const fault = parseFault(queued.shift() ?? (req.headers["x-fault"] as string | undefined) ?? control.always);
    let ended = false;
    res.on("close", () => {
      if (!ended) stats.abortedByClient += 1;
    });
    const finish = (): void => {
      ended = true;
      res.end();
    };
    // OpenAI sends `Authorization: Bearer`; Anthropic `x-api-key` (or a bearer token for OAuth-style keys).
    const key = (req.headers["x-api-key"] as string | undefined) ?? req.headers.authorization?.replace(/^Bearer /, "");
    if (apiKey !== null && key !== apiKey) return sendError(res, api, 401, undefined, "invalid api key", () => (ended = true));
    if (fault.echoKey) return sendError(res, api, 401, undefined, `Incorrect API key provided: ${key}`, () => (ended = true));
    if (fault.reset) {
      ended = true;
      req.socket.destroy();
      return;
    }
    if (fault.slowFirstTokenMs) await delay(fault.slowFirstTokenMs);
    if (fault.status) return sendError(res, api, fault.status, fault.retryAfter, `asked to fail with ${fault.status}`, () => (ended = true));
    if (fault.wrongContentType) {
      ended = true;
      res.writeHead(200, { "content-type": "text/html" }).end("<html>not an API</html>");
      return;
    }
    const model = String(body.model ?? "fault-model");
    const id = `${api === "openai" ? "chatcmpl" : "msg"}-${++sequence}`;
    const tool = fault.toolCall ? firstToolName(body, api) : undefined;
    const inputTokens = JSON.stringify(body.messages ?? []).length >> 2;
    const parts = words(fault);
    const outputTokens = tool ? 12 : parts.length;
    if (body.stream !== true) {
      ended = true;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify(
          api === "openai"
            ? openaiCompletion(id, model, tool, parts, inputTokens, outputTokens)
            : anthropicMessage(id, model, tool, parts, inputTokens, outputTokens),
        ),
      );
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    const events =
      api === "openai"
        ? openaiChunks(id, model, tool, parts, inputTokens, outputTokens, body)
        : anthropicEvents(id, model, tool, parts, inputTokens, outputTokens);
    let sent = 0;
    for (const event of events) {
      if (fault.stallAfter !== undefined && sent >= fault.stallAfter) return; // stalls: nothing more, connection open
      if (res.destroyed) return;
      res.write(fault.malformedSse ? "data: {not json at all\n\n" : event);
      sent += 1;
      await delay(fault.chunkEveryMs ?? 1);
    }
    finish();
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats,
    apiKey,
    faults: queued,
    get always() {
      return control.always;
    },
    set always(value: string | undefined) {
      control.always = value;
    },
    bodies,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function sendError(res: ServerResponse, api: "openai" | "anthropic", status: number, retryAfter: string | undefined, message: string, done: () => void): void {
  done();
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (retryAfter !== undefined) headers["retry-after"] = retryAfter;
  const body =
    api === "openai"
      ? { error: { message, type: status === 429 ? "rate_limit_exceeded" : "server_error", code: null } }
      : { type: "error", error: { type: status === 429 ? "rate_limit_error" : status === 529 || status === 503 ? "overloaded_error" : "api_error", message } };
  res.writeHead(status, headers).end(JSON.stringify(body));
}

function openaiCompletion(id: string, model: string, tool: string | undefined, parts: string[], inputTokens: number, outputTokens: number): unknown {
  const message = tool
    ? { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: tool, arguments: '{"city":"Paris"}' } }] }
    : { role: "assistant", content: parts.join("") };
  return {
    id,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message, finish_reason: tool ? "tool_calls" : "stop", logprobs: null }],
    usage: { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens },
  };
}

function* openaiChunks(
  id: string,
  model: string,
  tool: string | undefined,
  parts: string[],
  inputTokens: number,
  outputTokens: number,
  body: Record<string, unknown>,
): Generator<string> {
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: unknown, finish: string | null, usage?: unknown): string =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices: usage ? [] : [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}) })}\n\n`;
  yield chunk({ role: "assistant", content: "" }, null);
  if (tool) {
    yield chunk({ tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: tool, arguments: "" } }] }, null);
    yield chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":"Paris"}' } }] }, null);
  } else {
    for (const part of parts) yield chunk({ content: part }, null);
  }
  yield chunk({}, tool ? "tool_calls" : "stop");
  if ((body.stream_options as { include_usage?: unknown } | undefined)?.include_usage)
    yield chunk(undefined, null, { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens });
  yield "data: [DONE]\n\n";
}

function anthropicMessage(id: string, model: string, tool: string | undefined, parts: string[], inputTokens: number, outputTokens: number): unknown {
  return {
    id,
    type: "message",
    role: "assistant",
    model,
    content: tool ? [{ type: "tool_use", id: "toolu_1", name: tool, input: { city: "Paris" } }] : [{ type: "text", text: parts.join("") }],
    stop_reason: tool ? "tool_use" : "end_turn",
    stop_sequence: null,
    usage: { input_tokens: inputTokens, output_tokens: outputTokens },
  };
}

function* anthropicEvents(id: string, model: string, tool: string | undefined, parts: string[], inputTokens: number, outputTokens: number): Generator<string> {
  const event = (type: string, data: Record<string, unknown>): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  yield event("message_start", {
    message: {
      id,
      type: "message",
      role: "assistant",
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: 1 },
    },
  });
  if (tool) {
    yield event("content_block_start", { index: 0, content_block: { type: "tool_use", id: "toolu_1", name: tool, input: {} } });
    yield event("content_block_delta", { index: 0, delta: { type: "input_json_delta", partial_json: '{"city":"Paris"}' } });
  } else {
    yield event("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
    for (const part of parts) yield event("content_block_delta", { index: 0, delta: { type: "text_delta", text: part } });
  }
  yield event("content_block_stop", { index: 0 });
  yield event("message_delta", { delta: { stop_reason: tool ? "tool_use" : "end_turn", stop_sequence: null }, usage: { output_tokens: outputTokens } });
  yield event("message_stop", {});
}
