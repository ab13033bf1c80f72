/**
 * The LLM figures for `npm run bench`: the local OpenAI-compatible server (the project's LLM fault
 * server, in a process of its own) called directly with the official `openai` client, and through
 * toolbus (`toolbus up` in its own process, the router's subject), in one run: non-streamed calls
 * sequential and at 64 in flight, time to the first token of a stream, and how often toolbus reused a
 * connection (the server counts the connections it accepted).
 */
import { spawn, type ChildProcess } from "node:child_process";
import OpenAI from "openai";
import { ToolbusClient } from "@toolbus/client";
import { latencyRow, quantileOf, type LatencyRow } from "./measure.js";
import { LLM_FAULT_SERVER } from "../helpers/paths.js";
import { runToolbus, waitFor, writeConfig } from "../helpers/toolbus.js";
import { NODE_FLAGS } from "./startup.js";

const KEY = "sk-bench";
const MODEL = "bench-model";
const PROMPT = [{ role: "user" as const, content: "Say hello" }];

export type LlmRow = LatencyRow;

export interface LlmFigures {
  rows: LlmRow[];
  /** Time to the first content chunk of a stream, p50 and p99, ms. */
  ttft: { direct: { p50: number; p99: number }; toolbus: { p50: number; p99: number } };
  /** Requests toolbus sent the server, connections the server accepted meanwhile, and 1 − connections ÷ requests. */
  reuse: { requests: number; connections: number; ratio: number };
}

/** Time to the first chunk with text, over `n` sequential streams. */
async function firstTokens(
  n: number,
  open: () => Promise<AsyncIterable<unknown>>,
  hasText: (chunk: unknown) => boolean,
): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    let first: number | undefined;
    for await (const chunk of await open()) if (first === undefined && hasText(chunk)) first = performance.now() - s;
    times.push(first!);
  }
  return { p50: quantileOf(times, 0.5), p99: quantileOf(times, 0.99) };
}

/** The LLM fault server in a process of its own, so neither side of the comparison shares its CPU with it. */
async function startServer(): Promise<{ url: string; child: ChildProcess; stats(): Promise<{ requests: number; connections: number }> }> {
  const child = spawn(process.execPath, [LLM_FAULT_SERVER, "--api-key", KEY], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /listening (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`the LLM fault server exited (${code})`)));
  });
  return { url, child, stats: async () => (await (await fetch(`${url}/_stats`)).json()) as { requests: number; connections: number } };
}

export async function llmBench(natsUrl: string, size: { sequential: number; concurrent: number; warmup: number; streams: number }): Promise<LlmFigures> {
  const server = await startServer();
  const rows: LlmRow[] = [];
  try {
    const openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const direct = (): Promise<unknown> => openai.chat.completions.create({ model: MODEL, messages: PROMPT });
    rows.push(await latencyRow("direct openai client", direct, size));

    const config = writeConfig({
      admin: { port: -1 },
      log: { level: "warn" },
      cache: { enabled: false },
      chatLog: { enabled: false },
      // The seed's pool: 10 keep-alive connections.
      backends: { local: { kind: "llm-openai", url: `${server.url}/v1`, apiKey: { env: "BENCH_LLM_KEY" }, models: [MODEL] } },
    });
    const up = runToolbus(["--config", config, "--nats", natsUrl, "up"], { env: { TOOLBUS_LOG_LEVEL: "warn", BENCH_LLM_KEY: KEY }, nodeArgs: NODE_FLAGS });
    const client = await ToolbusClient.connect({ servers: natsUrl });
    try {
      await waitFor("the LLM caller", async () =>
        (await client.listTools(undefined, { timeoutMs: 1_000 })).some((b) => b.name === "local" && b.liveCallers > 0),
      );
      const through = (): Promise<unknown> => client.chat({ model: MODEL, messages: PROMPT }, { timeoutMs: 30_000 });
      const before = await server.stats();
      rows.push(await latencyRow("toolbus router → openai-compatible", through, size));
      const after = await server.stats();
      const requests = after.requests - before.requests;
      const connections = after.connections - before.connections;
      const ttft = {
        direct: await firstTokens(
          size.streams,
          () => openai.chat.completions.create({ model: MODEL, messages: PROMPT, stream: true }),
          (c) => Boolean((c as { choices?: Array<{ delta?: { content?: string } }> }).choices?.[0]?.delta?.content),
        ),
        toolbus: await firstTokens(
          size.streams,
          async () => client.chatStream({ model: MODEL, messages: PROMPT }, { timeoutMs: 30_000 }),
          (d) => Boolean((d as { content?: string }).content),
        ),
      };
      return { rows, ttft, reuse: { requests, connections, ratio: Math.round((1 - connections / Math.max(1, requests)) * 10_000) / 10_000 } };
    } finally {
      await client.close();
      up.kill("SIGTERM");
      await up.exited;
    }
  } finally {
    const exited = new Promise((resolve) => server.child.once("exit", resolve));
    server.child.kill("SIGTERM");
    await exited;
  }
}
