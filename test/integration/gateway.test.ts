import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, McpError, ToolListChangedNotificationSchema, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type GatewayWorker } from "@toolbus/gateway";
import { subjects } from "@toolbus/protocol";
import { createLogger, createMetrics } from "@toolbus/runtime";
import { RequestStrategy, type NatsConnection } from "nats";
import { everythingStdio, faultStdio, httpBackend, startEverythingHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { TOOLBUS_BIN } from "../helpers/paths.js";
import { servedByInstance } from "../helpers/services.js";
import { removeTempDirs, startStack, testConfig, waitFor, writeConfig, type Stack } from "../helpers/toolbus.js";

/** An MCP client (the SDK's) of the front door at `url`, or alternating between several replicas, request by request. */
async function mcpClient(urls: string[], headers: Record<string, string> = {}): Promise<Client & AsyncDisposable> {
  let n = 0;
  // Each request to the next replica: no session may depend on which one started it.
  const alternate: typeof fetch = (input, init) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
    const target = new URL(urls[n++ % urls.length]!);
    url.host = target.host;
    return fetch(url, init);
  };
  const client = new Client({ name: "gateway-test", version: "0" }, { capabilities: {} });
  await client.connect(new StreamableHTTPClientTransport(new URL(urls[0]!), { fetch: alternate, requestInit: { headers } }));
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.close() });
}

/** How many requests the `service` workers on the bus took on `subject` over NATS, all instances together. */
async function servedOverNats(nc: NatsConnection, service: string, subject: string): Promise<number> {
  const counts = await servedByInstance(nc, service, (e) => e.subject === subject, { strategy: RequestStrategy.Timer, maxWait: 300 });
  return counts.reduce((a, b) => a + b, 0);
}

const textOf = (r: unknown): string => ((r as CallToolResult).content[0] as { text: string }).text;

async function faultStats(client: Client, tool = "fault__stats"): Promise<{ cancelled: number; received: number }> {
  return (await client.callTool({ name: tool, arguments: {} })).structuredContent as { cancelled: number; received: number };
}

/** Start a call that hangs, cancel it from the client, and see the fault server record the cancellation. */
async function cancelReachesBackend(c: Client): Promise<void> {
  const before = (await faultStats(c)).cancelled;
  const controller = new AbortController();
  const call = c.callTool({ name: "fault__hang", arguments: {} }, undefined, { signal: controller.signal, timeout: 10_000 });
  await new Promise((r) => setTimeout(r, 300));
  controller.abort("changed my mind");
  await expect(call).rejects.toThrow();
  await waitFor("the backend to record the cancellation", async () => (await faultStats(c)).cancelled === before + 1, 5_000);
}

describe("the MCP front door", () => {
  let stack: Stack;
  let http: HttpServerProcess;
  let gateway: GatewayWorker;
  let second: GatewayWorker;

  beforeAll(async () => {
    // The HTTP backend that dies and comes back is the reference server, not ours.
    http = await startEverythingHttp();
    stack = await startStack({
      gateway: { enabled: true, port: 0 },
      backends: { everything: everythingStdio(), fault: faultStdio(), web: httpBackend(http.url) },
    });
    gateway = stack.toolbus.workers.find((w) => w.name === "gateway") as GatewayWorker;
    // A second replica on the same bus, as a second pod would be.
    const config = testConfig(stack.nats.url, { gateway: { enabled: true, port: 0 } });
    second = await startGateway(
      { nc: stack.client.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "gateway-second" },
      { config: config.gateway },
    );
    await waitFor("the tools of all three backends", async () => {
      await using c = await mcpClient([gateway.url]);
      const names = (await c.listTools()).tools.map((t) => t.name);
      return ["everything__echo", "fault__echo", "web__echo"].every((n) => names.includes(n));
    });
  });
  afterAll(async () => {
    await second?.stop();
    await stack?.[Symbol.asyncDispose]();
    await http?.stop();
  });

  it("lists the union of every backend's tools, named <backend>__<tool>, with their schemas and annotations", async () => {
    await using c = await mcpClient([gateway.url]);
    const { tools } = await c.listTools();
    const echo = tools.find((t) => t.name === "everything__echo");
    expect(echo?.inputSchema).toMatchObject({ type: "object", properties: { message: { type: "string" } } });
    expect(echo?.annotations).toMatchObject({ readOnlyHint: true });
    expect(tools.some((t) => t.name === "fault__hang")).toBe(true);
    expect(c.getServerVersion()?.name).toBe("toolbus");
  });

  it("calls a tool of each backend; an unknown tool is a JSON-RPC error, invalid arguments and a tool's own error are results", async () => {
    await using c = await mcpClient([gateway.url]);
    expect(textOf(await c.callTool({ name: "everything__echo", arguments: { message: "hi" } }))).toBe("Echo: hi");
    expect(textOf(await c.callTool({ name: "fault__echo", arguments: { message: "hi" } }))).toMatch(/hi/);
    const unknown = await c.callTool({ name: "fault__nope", arguments: {} }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(McpError);
    expect((unknown as McpError).code).toBe(-32602);
    const invalid = (await c.callTool({ name: "everything__echo", arguments: { message: 42 } })) as CallToolResult;
    expect(invalid.isError).toBe(true);
    expect(textOf(invalid)).toMatch(/message/);
    expect(invalid._meta?.["io.toolbus/error"]).toMatchObject({ code: "VALIDATION_FAILED" });
    const failed = (await c.callTool({ name: "fault__fail", arguments: { reason: "asked" } })) as CallToolResult;
    expect(failed).toMatchObject({ isError: true, content: [{ type: "text", text: "asked" }] });
  });

  it("a caller passes resources and prompts requests to its backend as they are (toolbus.v1.backend.<b>.mcp)", async () => {
    const listed = (await stack.client.mcpRequest("everything", "resources/list", {}, { timeoutMs: 5_000 })) as { resources: Array<{ uri: string }> };
    expect(listed.resources.length).toBeGreaterThan(0);
    const read = (await stack.client.mcpRequest("everything", "resources/read", { uri: listed.resources[0]!.uri }, { timeoutMs: 5_000 })) as {
      contents: Array<{ uri: string }>;
    };
    expect(read.contents[0]?.uri).toBe(listed.resources[0]!.uri);
    const prompts = (await stack.client.mcpRequest("everything", "prompts/list", {}, { timeoutMs: 5_000 })) as { prompts: Array<{ name: string }> };
    expect(prompts.prompts.length).toBeGreaterThan(0);
    // A method the backend refuses is the backend's answer, typed.
    await expect(stack.client.mcpRequest("fault", "prompts/get", { name: "nope" }, { timeoutMs: 5_000 })).rejects.toMatchObject({ code: "BACKEND_ERROR" });
  });

  it("serves the union of resources, resource templates and prompts, read and got through the bus", async () => {
    await using c = await mcpClient([gateway.url]);
    const { resources } = await c.listResources();
    expect(resources.length).toBeGreaterThan(0);
    const read = await c.readResource({ uri: resources[0]!.uri });
    expect(read.contents[0]?.uri).toBe(resources[0]!.uri);
    const { resourceTemplates } = await c.listResourceTemplates();
    expect(resourceTemplates.length).toBeGreaterThan(0);
    const { prompts } = await c.listPrompts();
    const simple = prompts.find((p) => p.name.startsWith("everything__") && !(p.arguments ?? []).some((a) => a.required));
    expect(simple).toBeDefined();
    const got = await c.getPrompt({ name: simple!.name });
    expect(got.messages.length).toBeGreaterThan(0);
    const missing = await c.readResource({ uri: "nobody://serves/this" }).catch((e: unknown) => e);
    expect((missing as McpError).code).toBe(-32002);
    const unknown = await c.getPrompt({ name: "everything__no-such-prompt" }).catch((e: unknown) => e);
    expect((unknown as McpError).code).toBe(-32602);
  });

  it("a transport failure is a JSON-RPC error with the toolbus code in data", async () => {
    await using c = await mcpClient([gateway.url]);
    const err = await c.callTool({ name: "fault__hang", arguments: {}, _meta: { "io.toolbus/timeoutMs": 300 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(-32603);
    expect((err as McpError).data).toMatchObject({ "io.toolbus/error": { code: "DEADLINE_EXCEEDED" } });
  });

  it("relays server-everything's progress with the client's own token", async () => {
    await using c = await mcpClient([gateway.url]);
    const seen: number[] = [];
    const result = await c.callTool({ name: "everything__trigger-long-running-operation", arguments: { duration: 1, steps: 4 } }, CallToolResultSchema, {
      onprogress: (p) => seen.push(p.progress),
      timeout: 10_000,
    });
    expect(textOf(result)).toMatch(/completed/i);
    expect(seen).toEqual([1, 2, 3, 4]);
  });

  it("a client's cancel reaches the backend that runs the call", async () => {
    await using c = await mcpClient([gateway.url]);
    await cancelReachesBackend(c);
  });

  it("two replicas, each request to the other: list, calls, progress and cancel all work", async () => {
    await using c = await mcpClient([gateway.url, second.url]);
    expect((await c.listTools()).tools.length).toBeGreaterThan(10);
    for (let i = 0; i < 4; i++) expect(textOf(await c.callTool({ name: "everything__echo", arguments: { message: `m${i}` } }))).toBe(`Echo: m${i}`);
    const seen: number[] = [];
    await c.callTool({ name: "everything__trigger-long-running-operation", arguments: { duration: 1, steps: 3 } }, CallToolResultSchema, {
      onprogress: (p) => seen.push(p.progress),
    });
    expect(seen).toEqual([1, 2, 3]);
    // With two replicas, the call goes to one and its cancel (a POST of its own) to the other.
    await cancelReachesBackend(c);
  });

  it("a call goes the shortest way: in-process within toolbus up, straight to the caller over NATS from elsewhere, through the router when asked or cacheable", async () => {
    const replica = async (raw: Record<string, unknown>, id: string): Promise<GatewayWorker> => {
      const config = testConfig(stack.nats.url, { ...raw, gateway: { enabled: true, port: 0, ...(raw.gateway as object) }, backends: { fault: faultStdio() } });
      const g = await startGateway(
        { nc: stack.client.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: id },
        { config: config.gateway, caching: { settings: config.cache, backends: config.backends } },
      );
      await waitFor(`${id} to list fault's tools`, async () => {
        await using c = await mcpClient([g.url]);
        return (await c.listTools()).tools.some((t) => t.name === "fault__stats");
      });
      return g;
    };
    const ARGS: Record<string, Record<string, unknown>> = { fault__echo: { message: "x" }, fault__stats: {}, fault__flaky: { id: "route", failures: 0 } };
    const viaRouter = await replica({ gateway: { route: "router" } }, "gateway-via-router");
    const caching = await replica({ cache: { enabled: true } }, "gateway-caching");
    try {
      const nc = stack.client.nc;
      const counts = async () => ({
        router: await servedOverNats(nc, "toolbus-router", subjects.toolCall()),
        caller: await servedOverNats(nc, "toolbus-caller", subjects.backendCall("fault")),
      });
      const hops = async (url: string, tool: string) => {
        await using c = await mcpClient([url]);
        const before = await counts();
        expect((await c.callTool({ name: tool, arguments: ARGS[tool] })).isError).toBeFalsy();
        const after = await counts();
        return { router: after.router - before.router, caller: after.caller - before.caller };
      };
      // toolbus up's own gateway hands the call to the caller beside it: neither takes it over NATS.
      expect(await hops(gateway.url, "fault__echo")).toEqual({ router: 0, caller: 0 });
      // A replica elsewhere sends it straight to the caller (the router would only pass it on).
      expect(await hops(second.url, "fault__echo")).toEqual({ router: 0, caller: 1 });
      // route: router, every call through the router.
      expect(await hops(viaRouter.url, "fault__echo")).toEqual({ router: 1, caller: 1 });
      // With caching on, a read-only tool's call goes to the router (which hands it to the cache); the rest straight.
      expect(await hops(caching.url, "fault__stats")).toEqual({ router: 1, caller: 1 });
      expect(await hops(caching.url, "fault__flaky")).toEqual({ router: 0, caller: 1 });
    } finally {
      await viaRouter.stop();
      await caching.stop();
    }
  });

  it("a backend that dies leaves the list with list_changed while the others keep working; back, its tools return", async () => {
    await using c = await mcpClient([gateway.url]);
    let changes = 0;
    c.setNotificationHandler(ToolListChangedNotificationSchema, async () => void changes++);
    // Let the client's GET stream (where list_changed comes) open.
    await new Promise((r) => setTimeout(r, 300));
    const port = http.port;
    await http.stop();
    await waitFor("web's tools to leave the list", async () => changes > 0 && !(await c.listTools()).tools.some((t) => t.name.startsWith("web__")), 15_000);
    expect(textOf(await c.callTool({ name: "everything__echo", arguments: { message: "still" } }))).toBe("Echo: still");
    const seen = changes;
    http = await startEverythingHttp(port);
    await waitFor("web's tools to return", async () => changes > seen && (await c.listTools()).tools.some((t) => t.name === "web__echo"), 20_000);
    // Its breaker may still be open a moment (it lets a probe through when its time is up).
    await waitFor("web's calls to succeed", async () => /back/.test(textOf(await c.callTool({ name: "web__echo", arguments: { message: "back" } }))), 15_000);
  });

  it("a session ended by DELETE at one replica is unknown at both (404)", async () => {
    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
    const init = await fetch(gateway.url, {
      method: "POST",
      headers,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "x", version: "0" } },
      }),
    });
    const session = init.headers.get("mcp-session-id")!;
    await init.text();
    const list = (url: string) =>
      fetch(url, { method: "POST", headers: { ...headers, "mcp-session-id": session }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
    // Known at the other replica too, then ended at the first.
    expect((await list(second.url)).status).toBe(200);
    expect((await fetch(gateway.url, { method: "DELETE", headers: { "mcp-session-id": session } })).status).toBe(200);
    expect((await list(gateway.url)).status).toBe(404);
    await waitFor("the other replica to forget it", async () => (await list(second.url)).status === 404, 5_000);
  });

  it("a port in use is named, with what to do about it", async () => {
    const config = testConfig(stack.nats.url, { gateway: { enabled: true, port: gateway.port } });
    await expect(
      startGateway(
        { nc: stack.client.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "gateway-clash" },
        { config: config.gateway },
      ),
    ).rejects.toThrow(/port is in use \(set gateway.port, or gateway.enabled: false\)/);
  });

  it("will not listen beyond loopback without tokens", async () => {
    const config = testConfig(stack.nats.url, { gateway: { enabled: true, port: 0, host: "0.0.0.0" } });
    await expect(
      startGateway(
        { nc: stack.client.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "gateway-open" },
        { config: config.gateway },
      ),
    ).rejects.toThrow(/not a loopback address: set gateway.tokens/);
  });

  it("refuses a foreign Origin, a request without a session, and a session nobody issued", async () => {
    const initialize = {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "x", version: "0" } },
    };
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(gateway.url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
        body: JSON.stringify(body),
      });
    expect((await post(initialize, { origin: "http://evil.example" })).status).toBe(403);
    expect((await post({ jsonrpc: "2.0", id: 2, method: "tools/list" })).status).toBe(400);
    expect((await post({ jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-session-id": "not-a-session" })).status).toBe(404);
    expect((await post({ jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-protocol-version": "1999-01-01" })).status).toBe(400);
    const big = await post({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "x", arguments: { pad: "x".repeat(2 * 1024 * 1024) } } });
    expect(big.status).toBe(413);
    const ok = await post(initialize);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("mcp-session-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("the MCP front door with bearer tokens", () => {
  let stack: Stack;
  let url: string;

  beforeAll(async () => {
    stack = await startStack(
      {
        gateway: {
          enabled: true,
          port: 0,
          tokens: [
            { name: "all", token: { env: "GW_TOKEN_ALL" }, backends: ["*"] },
            { name: "fault-only", token: { env: "GW_TOKEN_FAULT" }, backends: ["fault"] },
          ],
        },
        backends: { everything: everythingStdio(), fault: faultStdio() },
      },
      { env: { GW_TOKEN_ALL: "token-for-everything-0123456789", GW_TOKEN_FAULT: "token-for-fault-0123456789" } },
    );
    url = (stack.toolbus.workers.find((w) => w.name === "gateway") as GatewayWorker).url;
    await waitFor("both backends' tools", async () => {
      await using c = await mcpClient([url], { authorization: "Bearer token-for-everything-0123456789" });
      const names = (await c.listTools()).tools.map((t) => t.name);
      return names.includes("everything__echo") && names.includes("fault__echo");
    });
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  it("no token and a wrong token are refused with 401", async () => {
    await expect(mcpClient([url])).rejects.toMatchObject({ code: 401, message: expect.stringMatching(/bearer token is required/) });
    await expect(mcpClient([url], { authorization: "Bearer wrong-token" })).rejects.toMatchObject({ code: 401 });
  });

  it("a token that cannot be read stops the start, naming its variable", async () => {
    const config = testConfig(stack.nats.url, { gateway: { enabled: true, port: 0, tokens: [{ name: "x", token: { env: "GW_TOKEN_UNSET" } }] } });
    await expect(
      startGateway(
        { nc: stack.client.nc, logger: createLogger({ level: "silent" }), metrics: createMetrics(), workerId: "gateway-token" },
        { config: config.gateway },
      ),
    ).rejects.toThrow(/GW_TOKEN_UNSET is not set/);
  });

  it("a token reaches only its backends: the others are neither listed nor callable", async () => {
    await using c = await mcpClient([url], { authorization: "Bearer token-for-fault-0123456789" });
    const names = (await c.listTools()).tools.map((t) => t.name);
    expect(names).toContain("fault__echo");
    expect(names.some((n) => n.startsWith("everything__"))).toBe(false);
    const refused = await c.callTool({ name: "everything__echo", arguments: { message: "x" } }).catch((e: unknown) => e);
    expect((refused as McpError).code).toBe(-32602);
  });
});

describe("toolbus gateway --stdio", () => {
  let stack: Stack;
  let http: HttpServerProcess;

  beforeAll(async () => {
    http = await startEverythingHttp();
    stack = await startStack({ backends: { everything: everythingStdio(), fault: faultStdio(), web: httpBackend(http.url) } });
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await http?.stop();
    // The config written for the stdio gateway (vitest ends its workers without exit handlers).
    removeTempDirs();
  });

  it("serves the union to an MCP client that starts it as a command (as Claude Desktop does): calls, errors, progress, cancel, list_changed", async () => {
    const config = writeConfig({ nats: { servers: [stack.nats.url] }, log: { level: "warn" } });
    const client = new Client({ name: "desktop", version: "0" }, { capabilities: {} });
    await client.connect(
      new StdioClientTransport({ command: process.execPath, args: [TOOLBUS_BIN, "--config", config, "gateway", "--stdio"], stderr: "pipe" }),
    );
    try {
      await waitFor("both backends' tools", async () => {
        const names = (await client.listTools()).tools.map((t) => t.name);
        return ["everything__echo", "fault__echo", "web__echo"].every((n) => names.includes(n));
      });
      expect(textOf(await client.callTool({ name: "everything__echo", arguments: { message: "desk" } }))).toBe("Echo: desk");
      const seen: number[] = [];
      await client.callTool({ name: "everything__trigger-long-running-operation", arguments: { duration: 1, steps: 3 } }, CallToolResultSchema, {
        onprogress: (p) => seen.push(p.progress),
      });
      // The SDK's stdio client handles a notification a microtask after reading it but a response at
      // once, so a progress that arrives in the same read as the response is dropped as late (it does
      // the same straight from server-everything, most of the time). The ones before it all arrive.
      expect(seen.slice(0, 2)).toEqual([1, 2]);
      expect(seen.length).toBeLessThanOrEqual(3);

      // The same errors as over HTTP: an unknown tool is -32602, invalid arguments and a tool's own error are results.
      expect(textOf(await client.callTool({ name: "fault__echo", arguments: { message: "desk" } }))).toMatch(/desk/);
      expect(((await client.callTool({ name: "fault__nope", arguments: {} }).catch((e: unknown) => e)) as McpError).code).toBe(-32602);
      const invalid = (await client.callTool({ name: "everything__echo", arguments: { message: 42 } })) as CallToolResult;
      expect(invalid.isError).toBe(true);
      expect(textOf(invalid)).toMatch(/message/);
      expect(await client.callTool({ name: "fault__fail", arguments: { reason: "asked" } })).toMatchObject({ isError: true, content: [{ text: "asked" }] });
      await cancelReachesBackend(client);

      // A backend that dies leaves the list, with list_changed on stdin's other direction; back, it returns.
      let changes = 0;
      client.setNotificationHandler(ToolListChangedNotificationSchema, async () => void changes++);
      const port = http.port;
      await http.stop();
      await waitFor(
        "web's tools to leave the list",
        async () => changes > 0 && !(await client.listTools()).tools.some((t) => t.name.startsWith("web__")),
        15_000,
      );
      expect(textOf(await client.callTool({ name: "everything__echo", arguments: { message: "still" } }))).toBe("Echo: still");
      const seenChanges = changes;
      http = await startEverythingHttp(port);
      await waitFor("web's tools to return", async () => changes > seenChanges && (await client.listTools()).tools.some((t) => t.name === "web__echo"), 20_000);
    } finally {
      await client.close();
    }
  });
});
