import { randomUUID } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  CallToolRequestSchema,
  ErrorCode,
  ListResourcesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  PingRequestSchema,
  type CallToolResult,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";

/** What the server has seen; tests read it through the `stats` tool to count what reached the backend. */
export interface FaultStats {
  /** Calls of the faulty tools received (stats and control tools are not counted). */
  received: number;
  inFlight: number;
  /** The most calls that were ever in flight at once. */
  maxInFlight: number;
  cancelled: number;
  completed: number;
  /** Calls received, per tool. */
  byTool: Record<string, number>;
  /** MCP pings answered (what a health probe sends). */
  pings: number;
}

/** State shared by every session of one server process. */
export interface FaultState {
  stats: FaultStats;
  /** Attempts seen per `flaky` id, so a retried call finds its own count. */
  attempts: Map<string, number>;
  /** Tools added at run time by `add-tool`. */
  added: string[];
}

export function newState(): FaultState {
  return { stats: { received: 0, inFlight: 0, maxInFlight: 0, cancelled: 0, completed: 0, byTool: {}, pings: 0 }, attempts: new Map(), added: [] };
}

const delay = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });

type Args = Record<string, unknown>;
interface Extra {
  signal: AbortSignal;
  progressToken: string | number | undefined;
  progress(progress: number, total?: number): Promise<void>;
}
interface FaultTool {
  descriptor: Tool;
  /** Counted in stats (the control tools are not). */
  counted: boolean;
  run(args: Args, extra: Extra): Promise<CallToolResult>;
}

const text = (t: string): CallToolResult => ({ content: [{ type: "text", text: t }] });
const num = (args: Args, key: string, fallback?: number): number => {
  const value = args[key] ?? fallback;
  if (typeof value !== "number" || !Number.isFinite(value)) throw new McpError(ErrorCode.InvalidParams, `${key} must be a number`);
  return value;
};
const str = (args: Args, key: string): string => {
  const value = args[key];
  if (typeof value !== "string") throw new McpError(ErrorCode.InvalidParams, `${key} must be a string`);
  return value;
};
const schema = (properties: Record<string, object>, required: string[] = []): Tool["inputSchema"] => ({ type: "object", properties, required });
const READ_ONLY = { readOnlyHint: true, idempotentHint: true };
const IDEMPOTENT = { readOnlyHint: false, idempotentHint: true };

/**
 * The tools, by what they do to a caller. Annotations differ on purpose: retries may repeat only
 * read-only or idempotent tools, so `flaky` exists with and without them.
 */
function tools(state: FaultState, sendListChanged: () => void, sendResourceUpdated: (uri: string) => void): Map<string, FaultTool> {
  const registry = new Map<string, FaultTool>();
  const add = (
    name: string,
    description: string,
    inputSchema: Tool["inputSchema"],
    annotations: Tool["annotations"] | undefined,
    run: FaultTool["run"],
    counted = true,
  ): void => {
    registry.set(name, { descriptor: { name, description, inputSchema, ...(annotations ? { annotations } : {}) }, counted, run });
  };
  const flaky = async (args: Args): Promise<CallToolResult> => {
    const id = str(args, "id");
    const attempt = (state.attempts.get(id) ?? 0) + 1;
    state.attempts.set(id, attempt);
    if (attempt <= num(args, "failures")) throw new McpError(ErrorCode.InternalError, `flaky ${id}: attempt ${attempt} fails`);
    return text(`flaky ${id}: attempt ${attempt} succeeded`);
  };

  add("echo", "Echoes the message back", schema({ message: { type: "string" } }, ["message"]), READ_ONLY, async (args) =>
    text(`Echo: ${str(args, "message")}`),
  );
  add(
    "sleep",
    "Answers after `ms` ms (or a random time up to `maxMs`); sends progress every `progressEveryMs` when asked (for the first `progressForMs` only, if set, then goes quiet); honours cancellation",
    schema(
      {
        ms: { type: "number", minimum: 0 },
        maxMs: { type: "number", minimum: 0 },
        progressEveryMs: { type: "number", minimum: 1 },
        progressForMs: { type: "number", minimum: 0 },
      },
      ["ms"],
    ),
    READ_ONLY,
    async (args, extra) => {
      const min = num(args, "ms");
      const ms = args.maxMs === undefined ? min : min + Math.random() * Math.max(0, num(args, "maxMs") - min);
      const every = args.progressEveryMs === undefined ? undefined : num(args, "progressEveryMs");
      if (every === undefined || extra.progressToken === undefined) {
        await delay(ms, extra.signal);
      } else {
        const started = Date.now();
        const progressFor = args.progressForMs === undefined ? ms : num(args, "progressForMs");
        let step = 0;
        while (Date.now() - started + every < Math.min(ms, progressFor + 1)) {
          await delay(every, extra.signal);
          await extra.progress(++step);
        }
        await delay(Math.max(0, ms - (Date.now() - started)), extra.signal);
      }
      return text(`slept ${Math.round(ms)} ms`);
    },
  );
  add("big", "Answers with a text of `bytes` bytes", schema({ bytes: { type: "number", minimum: 0 } }, ["bytes"]), READ_ONLY, async (args) =>
    text("x".repeat(num(args, "bytes"))),
  );
  add(
    "http-error",
    "Over HTTP: answers the request itself with HTTP `status` and a body of `text`, or of `bytes` bytes (before any MCP handling)",
    schema({ status: { type: "number" }, bytes: { type: "number", minimum: 0 }, text: { type: "string" } }, ["status"]),
    undefined,
    async () => {
      throw new McpError(ErrorCode.InternalError, "http-error only works over HTTP");
    },
  );
  add(
    "block",
    "Blocks the server's event loop for `ms` (a hung process: it answers nothing meanwhile, not even a ping), then answers",
    schema({ ms: { type: "number", minimum: 0 } }, ["ms"]),
    undefined,
    async (args) => {
      const until = Date.now() + num(args, "ms");
      while (Date.now() < until) {
        // busy: nothing else runs
      }
      return text("unblocked");
    },
  );
  add("hang", "Never answers (until cancelled)", schema({}), READ_ONLY, (_args, extra) => delay(2 ** 31 - 1, extra.signal).then(() => text("unreachable")));
  add(
    "flaky",
    "Fails the first `failures` calls with a given `id` (JSON-RPC internal error), then succeeds; idempotent",
    schema({ id: { type: "string" }, failures: { type: "number" } }, ["id", "failures"]),
    IDEMPOTENT,
    flaky,
  );
  add(
    "flaky-unsafe",
    "Like flaky, but without annotations: not safe to repeat",
    schema({ id: { type: "string" }, failures: { type: "number" } }, ["id", "failures"]),
    undefined,
    flaky,
  );
  add("rpc-error", "Answers with a JSON-RPC error of `code` (default -32603)", schema({ code: { type: "number" } }), IDEMPOTENT, async (args) => {
    throw new McpError(num(args, "code", ErrorCode.InternalError), "asked to fail");
  });
  add("fail", "Reports a tool error (isError: true): a result, not a fault", schema({ reason: { type: "string" } }), READ_ONLY, async (args) => ({
    isError: true,
    content: [{ type: "text", text: typeof args.reason === "string" ? args.reason : "asked to fail" }],
  }));
  add("exit", "Exits the server process mid-call after `afterMs` (default 0)", schema({ afterMs: { type: "number" } }), undefined, async (args) => {
    await new Promise((r) => setTimeout(r, num(args, "afterMs", 0)));
    process.exit(3);
  });
  add("garbage", "Writes a line that is not JSON-RPC to stdout, then answers normally", schema({}), READ_ONLY, async () => {
    process.stdout.write("this line is not JSON-RPC\n");
    return text("after garbage");
  });
  add(
    "add-tool",
    "Registers a new tool named `name` (the server then sends notifications/tools/list_changed)",
    schema({ name: { type: "string", pattern: "^[a-z][a-z0-9-]*$" } }, ["name"]),
    undefined,
    async (args) => {
      const name = str(args, "name");
      state.added.push(name);
      add(name, "added at run time", schema({ text: { type: "string" } }, ["text"]), undefined, async (a) => text(`${name}: ${str(a, "text")}`));
      sendListChanged();
      return text(`added ${name}`);
    },
    false,
  );
  add(
    "touch-resource",
    "Sends notifications/resources/updated for `uri` (a resource changed: cached results may be stale)",
    schema({ uri: { type: "string" } }, ["uri"]),
    undefined,
    async (args) => {
      sendResourceUpdated(str(args, "uri"));
      return text(`touched ${str(args, "uri")}`);
    },
    false,
  );
  add(
    "stats",
    "Calls received, in flight (and the most at once), cancelled and completed",
    schema({}),
    READ_ONLY,
    async () => ({ content: [{ type: "text", text: JSON.stringify(state.stats) }], structuredContent: { ...state.stats } }),
    false,
  );
  add(
    "reset-stats",
    "Zeroes the stats and flaky counters",
    schema({}),
    undefined,
    async () => {
      Object.assign(state.stats, newState().stats);
      state.attempts.clear();
      return text("reset");
    },
    false,
  );
  // Tools added by another session of this process exist here too.
  for (const name of state.added)
    add(name, "added at run time", schema({ text: { type: "string" } }, ["text"]), undefined, async (a) => text(`${name}: ${str(a, "text")}`));
  return registry;
}

/** Build an MCP server whose tools misbehave on request. `state` is shared by every session. */
export function createFaultServer(state: FaultState, name = "toolbus-fault-server"): Server {
  // Resources only so that it may send resource notifications; it has none.
  const server = new Server({ name, version: "0.1.0" }, { capabilities: { tools: { listChanged: true }, resources: {} } });
  const registry = tools(
    state,
    () => void server.sendToolListChanged().catch(() => undefined),
    (uri) => void server.sendResourceUpdated({ uri }).catch(() => undefined),
  );
  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: [] }));
  const { stats } = state;

  server.setRequestHandler(PingRequestSchema, async () => {
    stats.pings++;
    return {};
  });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [...registry.values()].map((t) => t.descriptor) }));
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = registry.get(request.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `unknown tool ${request.params.name}`);
    const progressToken = request.params._meta?.progressToken;
    const run = (): Promise<CallToolResult> =>
      tool.run(request.params.arguments ?? {}, {
        signal: extra.signal,
        progressToken,
        progress: (progress, total) =>
          progressToken === undefined
            ? Promise.resolve()
            : extra.sendNotification({ method: "notifications/progress", params: { progressToken, progress, ...(total ? { total } : {}) } }),
      });
    if (!tool.counted) return run();
    stats.received++;
    stats.byTool[request.params.name] = (stats.byTool[request.params.name] ?? 0) + 1;
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    try {
      const result = await run();
      stats.completed++;
      return result;
    } catch (err) {
      if (extra.signal.aborted) stats.cancelled++;
      throw err;
    } finally {
      stats.inFlight--;
    }
  });
  return server;
}

export interface HttpFaultServer {
  readonly port: number;
  readonly url: string;
  readonly state: FaultState;
  close(): Promise<void>;
}

/**
 * How the server answers a request with a session id it does not know (after a restart, say): the
 * spec's 404, or the reference server-everything's 400 `No valid session ID provided`.
 */
export type UnknownSessionAnswer = 400 | 404;

const UNKNOWN_SESSION: Record<UnknownSessionAnswer, { code: number; message: string }> = {
  404: { code: -32001, message: "Session not found" },
  400: { code: -32000, message: "Bad Request: No valid session ID provided" },
};

/** Read a request body (the fault server needs to look at a call before the MCP transport does). */
function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}

/**
 * Serve the fault server over streamable HTTP at `/mcp` on 127.0.0.1. Sessions live in memory, so a
 * restarted server does not know an old session id; it answers as `unknownSession` says (404 default).
 */
export async function startHttpFaultServer(
  options: { port?: number; state?: FaultState; unknownSession?: UnknownSessionAnswer } = {},
): Promise<HttpFaultServer> {
  const state = options.state ?? newState();
  const { stats } = state;
  const unknown = UNKNOWN_SESSION[options.unknownSession ?? 404];
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const http: HttpServer = createHttpServer(async (req, res) => {
    if (!req.url?.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    const body = req.method === "POST" ? await readBody(req) : undefined;
    const call = body as { method?: string; params?: { name?: string; arguments?: { status?: number; bytes?: number; text?: string } } } | undefined;
    if (call?.method === "tools/call" && call.params?.name === "http-error") {
      // An HTTP-level failure with any body of any size, as a proxy or a broken server sends.
      const { status = 500, bytes = 100, text: body = "e".repeat(bytes) } = call.params.arguments ?? {};
      stats.received++;
      res.writeHead(status, { "content-type": "text/plain" }).end(body);
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    if (typeof sessionId === "string") {
      const transport = sessions.get(sessionId);
      if (!transport) {
        res.writeHead(options.unknownSession ?? 404, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", error: unknown, id: null }));
        return;
      }
      await transport.handleRequest(req, res, body);
      return;
    }
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, transport),
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await createFaultServer(state).connect(transport);
    await transport.handleRequest(req, res, body);
  });
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}/mcp`,
    state,
    close: async () => {
      await Promise.allSettled([...sessions.values()].map((t) => t.close()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
