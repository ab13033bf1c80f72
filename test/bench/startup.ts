/**
 * Start-up and memory for `npm run bench`: `toolbus up` with a config like the example's (server-everything
 * over stdio and HTTP, an LLM backend), timed from launch to the router's "started" line and to the
 * first answered call, with the process's RSS then; and the RSS of each worker kind run alone
 * (`toolbus worker <name>`), as it is deployed.
 */
import { ToolbusClient } from "@toolbus/client";
import { EVERYTHING_SERVER, LLM_FAULT_SERVER } from "../helpers/paths.js";
import { freePort } from "../helpers/mcp.js";
import { runToolbus, tempDir, waitFor, writeConfig, type ToolbusProcess } from "../helpers/toolbus.js";
import { rssMiB } from "./measure.js";

export interface StartupFigures {
  /** From launch to the router's "router started" log line. */
  routerReadyMs: number;
  /** From launch to the first successful call (stdio backend, through the router). */
  firstCallMs: number;
  /** RSS of the `toolbus up` process once it answered its first call, run as `npm start` runs it (NODE_FLAGS). */
  upRssMb: number;
  /** The same with plain `node` (V8's default young generation, up to 16 MB per semi-space). */
  upPlainNodeRssMb: number;
  /** RSS of each worker kind run alone, once it is ready. */
  workerRssMb: Record<string, number>;
}

/**
 * The flags `npm start` and the container run toolbus with (package.json): a young generation of at
 * most 2 MB per semi-space. V8 grows it to 16 MB during start-up's allocation churn and never gives it
 * back; capped, each process is about 18 MB smaller, with no cost per call this bench can see.
 */
export const NODE_FLAGS = ["--max-semi-space-size=2"];

async function stop(p: ToolbusProcess): Promise<void> {
  p.kill("SIGTERM");
  await p.exited;
}

export async function startupBench(natsUrl: string): Promise<StartupFigures> {
  const [httpPort, llmPort] = [await freePort(), await freePort()];
  const config = writeConfig({
    admin: { port: -1 },
    chatLog: { dir: tempDir("toolbus-bench-startup-") },
    backends: {
      everything: { kind: "mcp-stdio", command: process.execPath, args: [EVERYTHING_SERVER, "stdio"], pool: 2 },
      "everything-http": {
        kind: "mcp-http",
        url: `http://127.0.0.1:${httpPort}/mcp`,
        launch: { command: process.execPath, args: [EVERYTHING_SERVER, "streamableHttp"], env: { PORT: String(httpPort) } },
      },
      assistant: {
        kind: "llm-openai",
        url: `http://127.0.0.1:${llmPort}/v1`,
        models: ["local-model"],
        launch: { command: process.execPath, args: [LLM_FAULT_SERVER, "--port", String(llmPort), "--no-auth"] },
      },
    },
  });
  const client = await ToolbusClient.connect({ servers: natsUrl });
  try {
    const plain = runToolbus(["--config", config, "--nats", natsUrl, "up"], { env: { TOOLBUS_LOG_LEVEL: "info" } });
    let upPlainNodeRssMb = 0;
    try {
      await waitFor("the first call", () => client.callTool("everything", "echo", { message: "first" }, { timeoutMs: 1_000 }).then(() => true), 30_000);
      upPlainNodeRssMb = rssMiB(plain.child.pid!);
    } finally {
      await stop(plain);
    }
    const launched = performance.now();
    const up = runToolbus(["--config", config, "--nats", natsUrl, "up"], { env: { TOOLBUS_LOG_LEVEL: "info" }, nodeArgs: NODE_FLAGS });
    let routerReadyMs = 0;
    let firstCallMs = 0;
    let upRssMb = 0;
    try {
      await waitFor("the router to start", () => {
        if (!routerReadyMs && /"msg":"router started"/.test(up.output())) routerReadyMs = performance.now() - launched;
        return routerReadyMs > 0;
      });
      await waitFor(
        "the first call",
        async () => {
          await client.callTool("everything", "echo", { message: "first" }, { timeoutMs: 1_000 });
          return true;
        },
        30_000,
      );
      firstCallMs = performance.now() - launched;
      upRssMb = rssMiB(up.child.pid!);
    } finally {
      await stop(up);
    }
    const workerRssMb: Record<string, number> = {};
    for (const [name, args] of [
      ["router", ["worker", "router"]],
      ["caller (stdio)", ["worker", "caller", "--backend", "everything"]],
      ["caller (LLM)", ["worker", "caller", "--backend", "assistant"]],
      ["cache", ["worker", "cache"]],
      ["health-prober", ["worker", "health-prober"]],
      ["chat-log-writer", ["worker", "chat-log-writer"]],
    ] as const) {
      const worker = runToolbus(["--config", config, "--nats", natsUrl, ...args], { env: { TOOLBUS_LOG_LEVEL: "info" }, nodeArgs: NODE_FLAGS });
      try {
        await waitFor(`worker ${name} to start`, () => / started/.test(worker.output()), 30_000);
        // Let it settle (its first heartbeats, lazy work) before reading its memory.
        await new Promise((r) => setTimeout(r, 1_000));
        workerRssMb[name] = rssMiB(worker.child.pid!);
      } finally {
        await stop(worker);
      }
    }
    return { routerReadyMs: Math.round(routerReadyMs), firstCallMs: Math.round(firstCallMs), upRssMb, upPlainNodeRssMb, workerRssMb };
  } finally {
    await client.close();
  }
}
