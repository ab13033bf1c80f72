import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import { startEverythingHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

/**
 * What real deployments put in front of an MCP server, and the reference server does not: an app
 * mounted at another path that redirects to it (307), and no GET event stream at all, refused with a
 * plain 400 (not the spec's 405), as a POST-only route does. A proxy of ours plays that in front of
 * server-everything, under both HTTP transports.
 */
interface Proxy {
  url: string;
  counts: { initialize: number; get: number };
  close(): Promise<void>;
}

async function startProxy(target: number): Promise<Proxy> {
  const counts = { initialize: 0, get: 0 };
  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const upstream = httpRequest({ host: "127.0.0.1", port: target, path: "/mcp", method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    upstream.end(body);
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (req.method === "GET") {
        counts.get += 1;
        res.writeHead(400, { "content-type": "text/plain" }).end("this app has no event stream");
        return;
      }
      if (req.url === "/app") {
        res.writeHead(307, { location: "/app/" }).end();
        return;
      }
      // The caller's sessions (the health prober opens one of its own).
      if (body.includes('"initialize"') && body.includes("toolbus-caller")) counts.initialize += 1;
      forward(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/app`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("an HTTP server behind a redirect, with no event stream", () => {
  let everything: HttpServerProcess;
  let proxy: Proxy;
  let stack: Stack;

  beforeAll(async () => {
    everything = await startEverythingHttp();
    proxy = await startProxy(everything.port);
    stack = await startStack({ backends: { app: { kind: "mcp-http", url: proxy.url } } });
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await proxy?.close();
    await everything?.stop();
  });

  it("follows the redirect, and a refused event stream does not take the endpoint down", async () => {
    const { result } = await stack.client.callTool("app", "echo", { message: "through a redirect" }, { timeoutMs: 5_000 });
    expect(result.content).toEqual([{ type: "text", text: "Echo: through a redirect" }]);
    // The SDK's rule: a first GET that fails is reported once, not retried into marking the endpoint down.
    await new Promise((r) => setTimeout(r, 3_500));
    const caller = stack.toolbus.workers.find((w) => w.name === "caller:app") as CallerWorker;
    expect(caller.endpoints[0]!.live).toBe(true);
    // One session for the whole test; one GET each for the caller's and the prober's session, none again.
    expect(proxy.counts, JSON.stringify(proxy.counts)).toEqual({ initialize: 1, get: 2 });
    for (let i = 0; i < 5; i++) await stack.client.callTool("app", "echo", { message: `again ${i}` }, { timeoutMs: 5_000 });
  });
});
