import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { ErrorCode as McpErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterEach, describe, expect, it } from "vitest";
import { abortReason, classify } from "@toolbus/mcp-http";
import { EVERYTHING_SERVER, FAULT_SERVER } from "../../../test/helpers/paths.js";
import { LeanCalls, type LeanCallOptions } from "./lean-calls.js";
import { ChildProcessTransport } from "./stdio-transport.js";

/** A real MCP server over stdio, the SDK's Client connected to it, and the lean path beside it. */
async function connect(args: string[], script?: string): Promise<{ client: Client; lean: LeanCalls; transport: ChildProcessTransport }> {
  const transport = new ChildProcessTransport({
    command: process.execPath,
    args: script ? ["-e", script] : args,
    env: {},
    cwd: process.cwd(),
    onStderr: () => undefined,
    maxLineBytes: 1 << 20,
  });
  const client = new Client({ name: "lean-calls-test", version: "0" }, { capabilities: {} });
  await client.connect(transport);
  open.push(client);
  return { client, lean: new LeanCalls(transport), transport };
}

const open: Client[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

const opts = (timeoutMs = 10_000, signal = new AbortController().signal, maxTotalMs = timeoutMs): LeanCallOptions => ({ timeoutMs, maxTotalMs, signal });
const textOf = (r: { content: unknown[] }): string => (r.content[0] as { text: string }).text;

async function stats(client: Client): Promise<{ cancelled: number; completed: number; received: number }> {
  const r = await client.callTool({ name: "stats", arguments: {} });
  return r.structuredContent as { cancelled: number; completed: number; received: number };
}

describe("LeanCalls (tools/call beside the SDK's Client on one connection)", () => {
  it("answers each call with its own result while the SDK's own requests share the connection (server-everything)", async () => {
    const { client, lean } = await connect([EVERYTHING_SERVER, "stdio"]);
    const calls = Array.from({ length: 50 }, (_, i) => lean.call("echo", { message: `m${i}` }, opts()));
    const sdk = Promise.all([client.ping(), client.listTools(), client.ping()]);
    const results = await Promise.all(calls);
    expect(results.map(textOf)).toEqual(results.map((_, i) => `Echo: m${i}`));
    const [, listed] = await sdk;
    expect(listed.tools.length).toBeGreaterThan(5);
    expect(lean.inFlight).toBe(0);
  });

  it("leaves a tool with an output schema to the SDK, which checks its structured result", async () => {
    const { client, lean } = await connect([EVERYTHING_SERVER, "stdio"]);
    expect(lean.sdkOnly("get-structured-content")).toBe(false);
    lean.learn((await client.listTools()).tools);
    expect(lean.sdkOnly("get-structured-content")).toBe(true);
    expect(lean.sdkOnly("echo")).toBe(false);
  });

  it("a timeout rejects with McpError RequestTimeout and the server is told to cancel", async () => {
    const { client, lean } = await connect([FAULT_SERVER]);
    const err = await lean.call("hang", {}, opts(300)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(McpErrorCode.RequestTimeout);
    expect(classify(err, { sessionSent: false }).code).toBe("DEADLINE_EXCEEDED");
    await expect.poll(async () => (await stats(client)).cancelled, { timeout: 5_000 }).toBe(1);
  });

  it("an abort rejects with the signal's reason and the server is told to cancel", async () => {
    const { client, lean } = await connect([FAULT_SERVER]);
    const controller = new AbortController();
    const call = lean.call("hang", {}, opts(10_000, controller.signal));
    await new Promise((r) => setTimeout(r, 100));
    const reason = abortReason("client", "the client cancelled");
    controller.abort(reason);
    await expect(call).rejects.toBe(reason);
    await expect.poll(async () => (await stats(client)).cancelled, { timeout: 5_000 }).toBe(1);
    // Settled once: the listener is gone, nothing is left pending.
    expect(lean.inFlight).toBe(0);
  });

  it("progress restarts the timer, but never past the total", async () => {
    const { lean } = await connect([FAULT_SERVER]);
    // 1.2 s of work with progress every 100 ms outlives a 400 ms idle timer ...
    const ok = await lean.call("sleep", { ms: 1_200, progressEveryMs: 100 }, opts(400, undefined, 5_000));
    expect(textOf(ok)).toMatch(/^slept/);
    // ... but not a total of 600 ms.
    const started = Date.now();
    const err = await lean.call("sleep", { ms: 3_000, progressEveryMs: 100 }, opts(400, undefined, 600)).catch((e: unknown) => e);
    expect((err as McpError).code).toBe(McpErrorCode.RequestTimeout);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("a JSON-RPC error keeps its code; a child that exits mid-call rejects with ConnectionClosed", async () => {
    const { lean } = await connect([FAULT_SERVER]);
    const rpc = await lean.call("rpc-error", { code: -32602 }, opts()).catch((e: unknown) => e);
    expect((rpc as McpError).code).toBe(-32602);
    const exited = await lean.call("exit", { afterMs: 50 }, opts()).catch((e: unknown) => e);
    expect((exited as McpError).code).toBe(McpErrorCode.ConnectionClosed);
    expect(classify(exited, { sessionSent: false }).code).toBe("BACKEND_UNAVAILABLE");
  });

  it("a server that lies: a result that is not a CallToolResult, an answer with neither result nor error", async () => {
    // A minimal server that initializes properly, then answers tools/call wrongly.
    const script = `
      const rl = require("node:readline").createInterface({ input: process.stdin });
      const send = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
      rl.on("line", (line) => {
        const m = JSON.parse(line);
        if (m.method === "initialize") return send({ jsonrpc: "2.0", id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "liar", version: "0" } } });
        if (m.method !== "tools/call") return;
        if (m.params.name === "bad-result") send({ jsonrpc: "2.0", id: m.id, result: { content: "not a list" } });
        if (m.params.name === "no-result") send({ jsonrpc: "2.0", id: m.id });
        if (m.params.name === "other-id") { send({ jsonrpc: "2.0", id: 7, result: { content: [] } }); send({ jsonrpc: "2.0", id: m.id, result: { content: [] } }); }
      });`;
    const { lean } = await connect([], script);
    const bad = await lean.call("bad-result", {}, opts()).catch((e: unknown) => e);
    expect(classify(bad, { sessionSent: false })).toMatchObject({ code: "BACKEND_ERROR", message: expect.stringMatching(/not a valid MCP CallToolResult/) });
    const none = await lean.call("no-result", {}, opts()).catch((e: unknown) => e);
    // Made into a JSON-RPC error by the transport: the call ends now, not at its timeout.
    expect(none).toBeInstanceOf(McpError);
    expect((none as McpError).message).toMatch(/neither a result nor a JSON-RPC error/);
    // An answer to an id that is not ours goes to the SDK (which reports it); ours still arrives.
    expect((await lean.call("other-id", {}, opts())).content).toEqual([]);
  });
});
