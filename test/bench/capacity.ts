/**
 * node --import tsx test/bench/capacity.ts   (after npm run build)
 *
 * Capacity per worker, as deployed: each worker in a process of its own (`toolbus worker <name>`, one
 * pod each), the fault server's echo over stdio as the backend, 64 calls in flight. For each path, the
 * CPU µs per call of every worker process (from /proc) gives calls/s per core (1e6 ÷ µs); RSS after
 * the load gives memory per replica; a caller with 1 and with 4 stdio connections gives memory per
 * connection (the caller's own, and each MCP server child's). Prints a table and writes
 * bench-results/capacity-<time>.json. deploy/README.md quotes a run.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ToolbusClient } from "@toolbus/client";
import { faultStdio } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { ROOT } from "../helpers/paths.js";
import { childPids, runToolbus, waitForBackends, writeConfig } from "../helpers/toolbus.js";
import { gatewayLists, leanClient } from "./gateway.js";
import { cpuPerCall, rssMiB } from "./measure.js";
import { NODE_FLAGS } from "./startup.js";

const CALLS = Number(process.env.CALLS ?? 20_000);
const IN_FLIGHT = 64;
const args = { message: "capacity" };

interface PathRow {
  path: string;
  callsPerSec: number;
  cpuMicrosPerCall: Record<string, number>;
}

async function measure(path: string, call: () => Promise<unknown>, pids: Record<string, number>): Promise<PathRow> {
  const { callsPerSec, cpuMicrosPerCall } = await cpuPerCall(call, pids, CALLS, IN_FLIGHT);
  process.stderr.write(`  ${path}: ${callsPerSec} calls/s, CPU µs/call ${JSON.stringify(cpuMicrosPerCall)}\n`);
  return { path, callsPerSec, cpuMicrosPerCall };
}

await using nats = await startNats();
const gatewayPort = 18_000 + Math.floor(Math.random() * 2_000);
const config = writeConfig({
  admin: { port: -1 },
  chatLog: { enabled: false },
  gateway: { port: gatewayPort },
  backends: { one: faultStdio(1), four: faultStdio(4) },
});
const worker = (...args: string[]) =>
  runToolbus(["--config", config, "--nats", nats.url, "worker", ...args], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs: NODE_FLAGS });
const procs = {
  router: worker("router"),
  cache: worker("cache"),
  "caller (1 connection)": worker("caller", "--backend", "one"),
  "caller (4 connections)": worker("caller", "--backend", "four"),
  gateway: worker("gateway"),
};
const pid = (name: keyof typeof procs): number => procs[name].child.pid!;
const client = await ToolbusClient.connect({ servers: nats.url });
const rows: PathRow[] = [];
let memory: Record<string, number> = {};
let idle: Record<string, number> = {};
let children: { one: number[]; four: number[] } = { one: [], four: [] };
try {
  await waitForBackends(client, ["one", "four"], 30_000);
  // Memory per connection is compared at rest: the loaded caller's heap grows with the load, not with its connections.
  idle = Object.fromEntries(Object.keys(procs).map((name) => [name, rssMiB(pid(name as keyof typeof procs))]));
  const caller = pid("caller (1 connection)");
  rows.push(await measure("client → caller (one hop)", () => client.callTool("one", "echo", args, { direct: true, cache: "bypass" }), { caller }));
  rows.push(await measure("client → router → caller", () => client.callTool("one", "echo", args, { cache: "bypass" }), { router: pid("router"), caller }));
  rows.push(await measure("client → router → cache (hit)", () => client.callTool("one", "echo", args), { router: pid("router"), cache: pid("cache") }));
  const url = `http://127.0.0.1:${gatewayPort}/mcp`;
  await gatewayLists(url, "one__echo");
  {
    await using mcp = await leanClient(url);
    // A tool that is not read-only: the gateway sends it straight to the caller (echo would go to the cache).
    const flaky = { id: "capacity", failures: 0 };
    rows.push(
      await measure("MCP client → gateway → caller", () => mcp.callTool({ name: "one__flaky", arguments: flaky }), { gateway: pid("gateway"), caller }),
    );
  }
  memory = Object.fromEntries(Object.keys(procs).map((name) => [name, rssMiB(pid(name as keyof typeof procs))]));
  children = {
    one: (await childPids(caller)).map(rssMiB),
    four: (await childPids(pid("caller (4 connections)"))).map(rssMiB),
  };
} finally {
  await client.close();
  for (const p of Object.values(procs)) p.kill("SIGTERM");
  await Promise.all(Object.values(procs).map((p) => p.exited));
}

console.log("\nCapacity per worker (each its own process, fault server echo over stdio, 64 in flight):");
console.table(
  rows.flatMap((r) =>
    Object.entries(r.cpuMicrosPerCall).map(([worker, us]) => ({
      path: r.path,
      worker,
      "CPU µs/call": us,
      "calls/s per core": Math.round(1e6 / Math.max(1, us)),
      "path calls/s (2 shared cores)": r.callsPerSec,
    })),
  ),
);
const perConnection = Math.round(((idle["caller (4 connections)"]! - idle["caller (1 connection)"]!) / 3) * 10) / 10;
const child = Math.round((children.four.reduce((a, b) => a + b, 0) / Math.max(1, children.four.length)) * 10) / 10;
console.log("\nRSS (MiB), at rest and after the load (the callers of `four` took no load):");
console.table(Object.fromEntries(Object.keys(memory).map((name) => [name, { "at rest": idle[name], "after the load": memory[name] }])));
console.table({ "a caller's own memory per extra stdio connection (at rest)": perConnection, "each MCP server child (fault server)": child });

const outDir = join(ROOT, "bench-results");
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `capacity-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ calls: CALLS, inFlight: IN_FLIGHT, rows, idle, memory, children, perConnection }, null, 2));
console.log(`wrote ${file}`);
