/**
 * node --import tsx test/bench/cpu-split.ts
 *
 * Where the CPU goes: CPU µs per call in each process (from /proc, user + system), for the echo tool
 * at 64 in flight: the direct MCP SDK over stdio (bench process + MCP server) against toolbus (bench
 * client + nats-server + toolbus + MCP server), straight to the caller and through the router (both
 * bypassing the cache), and a cache hit through the router.
 */
import { readFileSync } from "node:fs";
import { ToolbusClient } from "@toolbus/client";
import { directStdio, faultStdio } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { FAULT_SERVER } from "../helpers/paths.js";
import { childPids, runToolbus, waitForBackends, writeConfig } from "../helpers/toolbus.js";
import { cpuPerCall } from "./measure.js";
import { NODE_FLAGS } from "./startup.js";

const CALLS = Number(process.env.CALLS ?? 20_000);
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 64);
const args = { message: "bench" };

const commandOf = (pid: number): string => readFileSync(`/proc/${pid}/cmdline`, "utf8");

async function measure(label: string, call: () => Promise<unknown>, pids: Record<string, number>): Promise<void> {
  const { callsPerSec, cpuMicrosPerCall } = await cpuPerCall(call, pids, CALLS, IN_FLIGHT);
  const total = Object.values(cpuMicrosPerCall).reduce((a, b) => a + b, 0);
  console.log(`${label.padEnd(16)} ${String(callsPerSec).padStart(6)} calls/s   CPU µs/call: ${JSON.stringify({ ...cpuMicrosPerCall, total })}`);
}

await using nats = await startNats();
{
  await using direct = await directStdio([FAULT_SERVER]);
  const server = (await childPids(process.pid)).find((pid) => commandOf(pid).includes("fault-server"))!;
  await measure("direct SDK", () => direct.callTool({ name: "echo", arguments: args }), { bench: process.pid, server });
}
const config = writeConfig({ admin: { port: -1 }, backends: { stdio: faultStdio(1) } });
// BENCH_PROFILE=dir writes a CPU profile of the toolbus process there.
const nodeArgs = [...NODE_FLAGS, ...(process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [])];
const up = runToolbus(["--config", config, "--nats", nats.url, "up"], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs });
const client = await ToolbusClient.connect({ servers: nats.url });
try {
  await waitForBackends(client, ["stdio"]);
  const pids = {
    bench: process.pid,
    nats: (await childPids(process.pid)).find((pid) => commandOf(pid).includes("nats-server"))!,
    toolbus: up.child.pid!,
    server: (await childPids(up.child.pid!))[0]!,
  };
  await measure("toolbus caller", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, direct: true, cache: "bypass" }), pids);
  await measure("toolbus router", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, cache: "bypass" }), pids);
  await measure("cache hit", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000 }), pids);
} finally {
  await client.close();
  up.kill("SIGTERM");
  await up.exited;
}
