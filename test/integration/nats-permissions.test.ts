import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "nats";
import { ToolbusClient } from "@toolbus/client";
import { worker, type WorkerName } from "@toolbus/cli";
import type { GatewayWorker } from "@toolbus/gateway";
import { subjects } from "@toolbus/protocol";
import { connectNats, createLogger, createMetrics, type Worker } from "@toolbus/runtime";
import { readChatLogs } from "../helpers/chat.js";
import { faultStdio } from "../helpers/mcp.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { removeTempDirs, tempDir, testConfig, toolbusCommand, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";

const logger = createLogger({ level: "silent" });

/**
 * The NATS users `toolbus deploy render` writes (nats-auth.conf), enforced by a real nats-server: every
 * worker connects as its own user, the whole path works without a single permission violation, and a
 * user cannot step outside its subjects.
 */
describe("per-worker NATS users with subject permissions (deploy render's nats-auth.conf)", () => {
  let nats: TestNats;
  let log: string;
  const passwords = new Map<string, string>();
  const workers: Worker[] = [];
  const connections: NatsConnection[] = [];
  let client: ToolbusClient;
  let chatDir: string;
  let gatewayUrl: string;
  let raw: Record<string, unknown>;

  /** Connect as `user` (with its password) to the test's server. */
  const connectAs = (user: string): Promise<NatsConnection> =>
    connectNats({ servers: [nats.url], user, pass: passwords.get(user)!, replicas: 1 }, { name: user, logger }).then((nc) => {
      connections.push(nc);
      return nc;
    });

  beforeAll(async () => {
    chatDir = tempDir("toolbus-perm-chat-");
    raw = {
      cache: { enabled: true },
      chatLog: { enabled: true, dir: chatDir, batch: { maxWait: 20 } },
      gateway: { enabled: true, port: 0 },
      backends: { fault: faultStdio(), other: faultStdio() },
    };
    // The users and their subjects, as rendered for this very config.
    const out = tempDir("toolbus-perm-render-");
    const rendered = await toolbusCommand(["--config", writeConfig(raw), "deploy", "render", "--out", out]);
    expect(rendered.stderr).toBe("");
    const auth = readFileSync(join(out, "nats-auth.conf"), "utf8");
    for (const m of auth.matchAll(/user: "([^"]+)"\n\s+password: \$(\w+)/g)) {
      // Starting with a letter: nats-server parses the variable's value, and one such as "7e3…" is not a string.
      const password = `p${randomBytes(12).toString("hex")}`;
      passwords.set(m[1]!, password);
      // nats-server reads $TOOLBUS_NATS_PASS_<USER> from its environment, as in the pod.
      process.env[m[2]!] = password;
    }
    expect([...passwords.keys()].sort()).toEqual(["cache", "caller-fault", "caller-other", "chat-log-writer", "client", "gateway", "health-prober", "router"]);
    log = join(out, "nats-server.log");
    writeFileSync(join(out, "nats-server.conf"), `include nats-auth.conf\n`);
    nats = await startNats({ args: ["-c", join(out, "nats-server.conf")], logFile: log });

    const config = testConfig(nats.url, raw);
    const start = async (name: WorkerName, user: string, backend?: string) =>
      workers.push(await worker(name, { nc: await connectAs(user), logger, metrics: createMetrics() }, config, backend));
    await start("caller", "caller-fault", "fault");
    await start("caller", "caller-other", "other");
    await start("router", "router");
    await start("cache", "cache");
    await start("health-prober", "health-prober");
    await start("chat-log-writer", "chat-log-writer");
    await start("gateway", "gateway");
    gatewayUrl = (workers.at(-1) as GatewayWorker).url;
    client = await ToolbusClient.connect({ servers: nats.url, user: "client", pass: passwords.get("client")! });
    await waitForBackends(client, ["fault", "other"]);
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    for (const w of workers.reverse()) await w.stop();
    for (const nc of connections) await nc.close();
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  /** The server's permission violations so far, one line each. */
  const violations = (): string[] =>
    existsSync(log)
      ? readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => /violation/i.test(l))
      : [];

  it("every path works with each worker on its own user, and the server logs no violation", async () => {
    // Through the router, straight to the caller, through the cache (a read-only tool) twice: the second a hit.
    expect((await client.callTool("fault", "echo", { message: "routed" })).result.content).toEqual([{ type: "text", text: "Echo: routed" }]);
    expect((await client.callTool("other", "echo", { message: "direct" }, { direct: true })).result.content).toEqual([{ type: "text", text: "Echo: direct" }]);
    await client.callTool("fault", "stats", {});
    expect((await client.callTool("fault", "stats", {})).meta.cached).toBe("l1");
    expect((await client.listTools()).map((b) => b.name).sort()).toEqual(["fault", "other"]);
    expect(Array.isArray(await client.health())).toBe(true);
    expect((await client.callerStatus(300)).length).toBe(2);
    // A cancel reaches the caller, and the backend hears it.
    const before = (await client.callTool("fault", "stats", {}, { cache: "bypass" })).result.structuredContent as { cancelled: number };
    const abort = new AbortController();
    const hung = client.callTool("fault", "hang", {}, { signal: abort.signal, timeoutMs: 10_000, cache: "bypass" });
    setTimeout(() => abort.abort(), 300);
    await expect(hung).rejects.toMatchObject({ code: "CANCELLED" });
    await waitFor("the cancel to reach the backend", async () => {
      const now = (await client.callTool("fault", "stats", {}, { cache: "bypass" })).result.structuredContent as { cancelled: number };
      return now.cancelled === before.cancelled + 1;
    });
    // Chat events, from a caller (a call in a conversation) and from the client itself, reach the files.
    await client.callTool("fault", "echo", { message: "logged" }, { conversationId: "perm-1" });
    const { id } = await client.publishChatEvent({ conversationId: "perm-1", type: "user_message", payload: { text: "hi" } });
    await waitFor("the chat events in the file", () => {
      const events = readChatLogs(chatDir).get("perm-1") ?? [];
      return events.some((e) => e.id === id) && events.some((e) => e.type === "tool_result");
    });
    // The MCP front door, as its own user.
    const mcp = new Client({ name: "perm-test", version: "0" }, { capabilities: {} });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(gatewayUrl)));
    try {
      await waitFor("the front door's union", async () => (await mcp.listTools()).tools.some((t) => t.name === "other__echo"));
      const result = (await mcp.callTool({ name: "other__echo", arguments: { message: "front door" } })) as CallToolResult;
      expect(result.content).toEqual([{ type: "text", text: "Echo: front door" }]);
    } finally {
      await mcp.close();
    }
    expect(violations()).toEqual([]);
  });

  it("a caller cannot take or send another backend's calls; a client cannot act as a caller", async () => {
    const caller = await connectAs("caller-fault");
    caller.publish(subjects.backendCall("other"), new TextEncoder().encode("{}"));
    caller.subscribe(subjects.backendCall("other"));
    const app = await connectAs("client");
    app.subscribe(subjects.backendCall("fault"));
    app.publish(subjects.callerHeartbeat("fault"), new TextEncoder().encode("{}"));
    await Promise.all([caller.flush(), app.flush()]);
    await waitFor("the server to refuse all four", () => violations().length >= 4, 5_000);
    const seen = violations().join("\n");
    for (const [user, subject] of [
      ["caller-fault", subjects.backendCall("other")],
      ["client", subjects.backendCall("fault")],
      ["client", subjects.callerHeartbeat("fault")],
    ] as const) {
      expect(seen).toContain(`"${user}"`);
      expect(seen).toContain(subject);
    }
  });
});
