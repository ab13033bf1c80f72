#!/usr/bin/env node
/**
 * `node packages/llm-fault-server/dist/main.js`: an OpenAI- and Anthropic-compatible server for trying toolbus without an
 * LLM, and for benches. `[--port N] [--api-key KEY | --no-auth] [--fault SPEC]` (SPEC: the X-Fault syntax, applied
 * to every request that sends none). Prints `listening <url>` on stdout once it accepts connections;
 * `GET /_stats` answers its counters (requests, connections, clients that left early).
 */
import { startLlmFaultServer } from "./server.js";

const args = process.argv.slice(2);
const value = (flag: string): string | undefined => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
if (args.includes("--help") || args.includes("-h")) {
  process.stdout.write("usage: node packages/llm-fault-server/dist/main.js [--port N] [--api-key KEY | --no-auth] [--fault SPEC]\n");
  process.exit(0);
}
const server = await startLlmFaultServer({ port: Number(value("--port") ?? 0), apiKey: args.includes("--no-auth") ? null : value("--api-key") });
server.always = value("--fault");
process.stdout.write(`listening ${server.url}\n`);
const stop = (): void => void server.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
