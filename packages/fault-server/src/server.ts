import { randomUUID } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

/** What the server has seen; tests read it through the `stats` tool to count what reached the backend. */
export interface FaultStats {
  received: number;
  inFlight: number;
  cancelled: number;
  completed: number;
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

/** Build an MCP server whose tools misbehave on request. `stats` is shared by every session. */
export function createFaultServer(stats: FaultStats, name = "toolbus-fault-server"): McpServer {
  const server = new McpServer({ name, version: "0.1.0" });
  const counted = async <T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> => {
    stats.received++;
    stats.inFlight++;
    try {
      const value = await work();
      stats.completed++;
      return value;
    } catch (err) {
      if (signal.aborted) stats.cancelled++;
      throw err;
    } finally {
      stats.inFlight--;
    }
  };

  server.registerTool(
    "echo",
    {
      description: "Echoes the message back",
      inputSchema: { message: z.string() },
      annotations: { readOnlyHint: true, idempotentHint: true },
    },
    ({ message }, extra) => counted(extra.signal, async () => ({ content: [{ type: "text", text: `Echo: ${message}` }] })),
  );
  server.registerTool(
    "sleep",
    {
      description: "Answers after `ms` milliseconds; honours cancellation (counted in stats.cancelled)",
      inputSchema: { ms: z.number().int().min(0) },
      annotations: { readOnlyHint: true, idempotentHint: true },
    },
    ({ ms }, extra) =>
      counted(extra.signal, async () => {
        await delay(ms, extra.signal);
        return { content: [{ type: "text", text: `slept ${ms} ms` }] };
      }),
  );
  server.registerTool(
    "fail",
    { description: "Reports a tool error (isError: true)", inputSchema: { reason: z.string().default("asked to fail") } },
    ({ reason }, extra) => counted(extra.signal, async () => ({ isError: true, content: [{ type: "text", text: reason }] })),
  );
  server.registerTool(
    "add-tool",
    {
      description: "Registers a new echo-like tool named `name` (the server then sends notifications/tools/list_changed)",
      inputSchema: { name: z.string().regex(/^[a-z][a-z0-9-]*$/) },
    },
    async ({ name: toolName }) => {
      server.registerTool(toolName, { description: "added at run time", inputSchema: { text: z.string() } }, async ({ text }) => ({
        content: [{ type: "text", text: `${toolName}: ${text}` }],
      }));
      return { content: [{ type: "text", text: `added ${toolName}` }] };
    },
  );
  server.registerTool("stats", { description: "Calls received, in flight, cancelled and completed", annotations: { readOnlyHint: true } }, async () => ({
    content: [{ type: "text", text: JSON.stringify(stats) }],
    structuredContent: { ...stats },
  }));
  return server;
}

export function newStats(): FaultStats {
  return { received: 0, inFlight: 0, cancelled: 0, completed: 0 };
}

export interface HttpFaultServer {
  readonly port: number;
  readonly url: string;
  readonly stats: FaultStats;
  close(): Promise<void>;
}

/**
 * Serve the fault server over streamable HTTP at `/mcp` on 127.0.0.1. Sessions live in memory, so a
 * restarted server answers 404 to an old session id, as the MCP spec says it must.
 */
export async function startHttpFaultServer(options: { port?: number; stats?: FaultStats } = {}): Promise<HttpFaultServer> {
  const stats = options.stats ?? newStats();
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const http: HttpServer = createHttpServer(async (req, res) => {
    if (!req.url?.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    if (typeof sessionId === "string") {
      const transport = sessions.get(sessionId);
      if (!transport) {
        res
          .writeHead(404, { "content-type": "application/json" })
          .end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }));
        return;
      }
      await transport.handleRequest(req, res);
      return;
    }
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => void sessions.set(id, transport),
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await createFaultServer(stats).connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}/mcp`,
    stats,
    close: async () => {
      await Promise.allSettled([...sessions.values()].map((t) => t.close()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
