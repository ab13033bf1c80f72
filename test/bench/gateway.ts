/**
 * The MCP front door's figures for `npm run bench` (`--only gateway`): an MCP client (the SDK's, over
 * streamable HTTP, on toolbus's lean client transport) calling server-everything's `echo` through toolbus's gateway, through mcp-proxy and
 * through supergateway (stateful) in front of the same stdio server, and straight to server-everything's
 * own streamable-HTTP server, in one run: sequential p50 and p99, calls/s at 64 in flight, and the CPU
 * per call of the processes in the middle (toolbus: `toolbus up`, plus the gateway's own process where
 * it runs apart). toolbus is measured three ways: all in one process, and the gateway in its own
 * process going to the caller over NATS, straight or through the router.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { Agent } from "undici";
import { LeanHttpTransport } from "@toolbus/mcp-http";
import { freePort, startEverythingHttp } from "../helpers/mcp.js";
import { EVERYTHING_SERVER } from "../helpers/paths.js";
import { runToolbus, waitFor, writeConfig } from "../helpers/toolbus.js";
import { latencyRow, type LatencyRow } from "./measure.js";
import { NODE_FLAGS } from "./startup.js";

export type GatewayRow = LatencyRow;

const require = createRequire(import.meta.url);
const MCP_PROXY = require.resolve("mcp-proxy/dist/bin/mcp-proxy.mjs");
const SUPERGATEWAY = require.resolve("supergateway/dist/index.js");

/**
 * The bench's MCP client: the SDK's Client on toolbus's lean streamable-HTTP transport. With the SDK's
 * own transport the client spends about a millisecond of CPU per call and caps every row near the same
 * figure, hiding the differences between what is measured.
 */
export async function leanClient(url: string): Promise<Client & AsyncDisposable> {
  const agent = new Agent({ connections: 16, keepAliveTimeout: 30_000 });
  const client = new Client({ name: "bench", version: "0" }, { capabilities: {} });
  const transport: LeanHttpTransport = new LeanHttpTransport(new URL(url), {
    dispatcher: agent,
    headers: {},
    maxResponseBytes: 16 * 1024 * 1024,
    onTooLarge: () => undefined,
  });
  await client.connect(transport);
  return Object.assign(client, {
    [Symbol.asyncDispose]: async () => {
      await client.close();
      await agent.close();
    },
  });
}

/** Until the front door at `url` lists `tool` (its catalog has heard the backend's callers). */
export async function gatewayLists(url: string, tool: string): Promise<void> {
  await waitFor(
    `the gateway to list ${tool}`,
    async () => {
      await using c = await leanClient(url);
      return (await c.listTools()).tools.some((t) => t.name === tool);
    },
    30_000,
  );
}

async function measure(name: string, url: string, tool: string, pids: readonly number[], sizes: GatewaySizes): Promise<GatewayRow> {
  await using client = await leanClient(url);
  // Awaited here: the client is disposed when this function returns.
  return await latencyRow(name, () => client.callTool({ name: tool, arguments: { message: "bench" } }), sizes, pids);
}

/** A peer proxy in its own process, on a free port, until it prints that it listens. */
async function startPeer(args: string[], ready: RegExp): Promise<{ child: ChildProcess; stop: () => Promise<void> }> {
  // Its own process group: a stop takes the stdio server it spawned down with it.
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  await waitFor(`${args[0]} to listen`, () => ready.test(out), 20_000).catch((err: Error) => {
    process.kill(-child.pid!, "SIGKILL");
    throw new Error(`${err.message}\n${out.slice(-2000)}`);
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    child,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, "SIGKILL");
      await exited;
    },
  };
}

export interface GatewaySizes {
  sequential: number;
  concurrent: number;
  warmup: number;
}

/** How toolbus is laid out for a row: the gateway's `route`, and whether the gateway runs in its own process. */
interface Layout {
  route: "auto" | "router";
  /** The gateway as its own process (`toolbus gateway`), as in a deployment; else inside `toolbus up`. */
  separate: boolean;
}

/** toolbus in front of server-everything over stdio, laid out as `layout` says, measured. */
async function measureToolbus(natsUrl: string, name: string, layout: Layout, sizes: GatewaySizes): Promise<GatewayRow> {
  const port = await freePort();
  const config = writeConfig({
    nats: { servers: [natsUrl] },
    admin: { port: -1 },
    cache: { enabled: false },
    chatLog: { enabled: false },
    gateway: { port, route: layout.route, enabled: !layout.separate },
    backends: { everything: { kind: "mcp-stdio", command: process.execPath, args: [EVERYTHING_SERVER, "stdio"] } },
  });
  const nodeArgs = [
    ...NODE_FLAGS,
    ...(process.env.BENCH_PROFILE ? ["--cpu-prof", "--cpu-prof-interval=100", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
  ];
  const run = (args: string[]): ReturnType<typeof runToolbus> =>
    runToolbus(["--config", config, "--nats", natsUrl, ...args], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs });
  const processes = [run(["up"])];
  if (layout.separate) processes.push(run(["gateway"]));
  try {
    const url = `http://127.0.0.1:${port}/mcp`;
    await gatewayLists(url, "everything__echo");
    return await measure(
      name,
      url,
      "everything__echo",
      processes.map((p) => p.child.pid!),
      sizes,
    );
  } finally {
    for (const p of processes) p.kill("SIGTERM");
    await Promise.all(processes.map((p) => p.exited));
  }
}

export async function gatewayBench(natsUrl: string, sizes: GatewaySizes): Promise<GatewayRow[]> {
  const rows: GatewayRow[] = [];
  {
    await using direct = await startEverythingHttp();
    rows.push(await measure("direct SDK → server-everything HTTP", direct.url, "echo", [], sizes));
  }
  // `toolbus up`: the gateway hands a call to the caller in its own process. Then the gateway in a process
  // of its own, as deployed: one trip over NATS to the caller, or two through the router (`route: router`).
  rows.push(await measureToolbus(natsUrl, "toolbus up: gateway → stdio", { route: "auto", separate: false }, sizes));
  rows.push(await measureToolbus(natsUrl, "toolbus gateway ⇄ NATS ⇄ caller → stdio", { route: "auto", separate: true }, sizes));
  rows.push(await measureToolbus(natsUrl, "toolbus gateway ⇄ NATS ⇄ router ⇄ caller → stdio", { route: "router", separate: true }, sizes));
  {
    const p = await freePort();
    const peer = await startPeer(
      [MCP_PROXY, "--host", "127.0.0.1", "--port", String(p), "--server", "stream", "--", process.execPath, EVERYTHING_SERVER, "stdio"],
      /starting server on port|listening/i,
    );
    try {
      rows.push(await measure("mcp-proxy → stdio", `http://127.0.0.1:${p}/mcp`, "echo", [peer.child.pid!], sizes));
    } finally {
      await peer.stop();
    }
  }
  {
    const p = await freePort();
    const peer = await startPeer(
      [
        SUPERGATEWAY,
        "--stdio",
        `${process.execPath} ${EVERYTHING_SERVER} stdio`,
        "--outputTransport",
        "streamableHttp",
        "--stateful",
        "--port",
        String(p),
        "--logLevel",
        "info",
      ],
      /listening|StreamableHttp endpoint|port/i,
    );
    try {
      rows.push(await measure("supergateway (stateful) → stdio", `http://127.0.0.1:${p}/mcp`, "echo", [peer.child.pid!], sizes));
    } finally {
      await peer.stop();
    }
  }
  return rows;
}
