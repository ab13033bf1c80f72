import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ToolbusClient } from "@toolbus/client";
import { directHttp, directStdio, everythingStdio, httpBackend, startEverythingHttp, type HttpServerProcess } from "../helpers/mcp.js";
import { EVERYTHING_SERVER } from "../helpers/paths.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

describe("echo through the bus", () => {
  let http: HttpServerProcess;
  let stack: Stack;
  let client: ToolbusClient;

  beforeAll(async () => {
    http = await startEverythingHttp();
    stack = await startStack({ backends: { everything: everythingStdio(), "everything-http": httpBackend(http.url) } });
    client = stack.client;
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await http?.stop();
  });

  const args = { message: "hello toolbus ✓" };

  it("over stdio, by the router's subject and by the caller's, returns what a direct SDK call returns", async () => {
    await using direct = await directStdio([EVERYTHING_SERVER, "stdio"]);
    const expected = await direct.callTool({ name: "echo", arguments: args });
    const viaRouter = await client.callTool("everything", "echo", args, { timeoutMs: 5_000 });
    const viaCaller = await client.callTool("everything", "echo", args, { timeoutMs: 5_000, direct: true });
    expect(viaRouter.result).toEqual(expected);
    expect(viaCaller.result).toEqual(expected);
    expect(viaRouter.meta).toMatchObject({ backend: "everything", attempts: 1, cached: false });
    expect(viaRouter.meta.endpoint).toMatch(/^everything#\d+$/);
  });

  it("over streamable HTTP, by both subjects, returns what a direct SDK call returns", async () => {
    await using direct = await directHttp(http.url);
    const expected = await direct.callTool({ name: "echo", arguments: args });
    const viaRouter = await client.callTool("everything-http", "echo", args, { timeoutMs: 5_000 });
    const viaCaller = await client.callTool("everything-http", "echo", args, { timeoutMs: 5_000, direct: true });
    expect(viaRouter.result).toEqual(expected);
    expect(viaCaller.result).toEqual(expected);
    expect(viaCaller.meta.endpoint).toBe("everything-http#0");
    // The transport this run is about: the lean one, or the SDK's in the sdk-http-transport project.
    const caller = stack.toolbus.workers.find((w) => w.name === "caller:everything-http") as unknown as { endpoints: Array<{ transportKind: string }> };
    expect(caller.endpoints[0]!.transportKind).toBe(process.env.TOOLBUS_MCP_HTTP_TRANSPORT ?? "lean");
  });

  it("tools.list lists each backend's tools with their schemas and annotations", async () => {
    await using direct = await directStdio([EVERYTHING_SERVER, "stdio"]);
    const { tools: expected } = await direct.listTools();
    const listed = await client.listTools(undefined, { timeoutMs: 2_000 });
    const stdio = listed.find((b) => b.name === "everything");
    expect(stdio?.liveCallers).toBe(1);
    expect(stdio?.tools).toEqual(expected);
    const echo = stdio?.tools?.find((t) => t.name === "echo");
    expect(echo?.inputSchema).toMatchObject({ type: "object", properties: { message: { type: "string" } }, required: ["message"] });
    expect(echo?.annotations).toMatchObject({ readOnlyHint: true, idempotentHint: true });
    const onlyHttp = await client.listTools("everything-http", { timeoutMs: 2_000 });
    expect(onlyHttp.map((b) => b.name)).toEqual(["everything-http"]);
    expect(onlyHttp[0]?.tools?.map((t) => t.name).sort()).toEqual(expected.map((t) => t.name).sort());
  });

  it("a tool that reports isError is a result, not a failure", async () => {
    const { result } = await client.callTool("everything", "get-sum", { a: 1, b: 2 }, { timeoutMs: 5_000 });
    expect(result.isError).toBeFalsy();
    expect(JSON.stringify(result.content)).toContain("3");
  });
});
