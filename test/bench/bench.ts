/**
 * npm run bench [-- --quick] [-- --out dir]
 *
 * The echo tool of a local MCP server (the project's fault server), measured in one run:
 * direct MCP SDK over stdio and over streamable HTTP (the baselines), then through toolbus to each,
 * by the router's subject and straight to the caller's. Sequential calls and 64 in flight; p50/p95/p99
 * and calls/s; ratios against the direct SDK over the same transport. Writes JSON under bench-results/.
 * BENCH_PROFILE=<dir> writes a CPU profile of the toolbus process; --only <text> picks toolbus rows.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ToolbusClient } from "@toolbus/client";
import { directHttp, directStdio, faultStdio, httpBackend, startFaultHttp } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { FAULT_SERVER, ROOT } from "../helpers/paths.js";
import { runToolbus, waitForBackends, writeConfig } from "../helpers/toolbus.js";

const quick = process.argv.includes("--quick");
/** --smoke: a few calls per row, for the test that keeps the bench from rotting. */
const smoke = process.argv.includes("--smoke");
const outDir = process.argv.includes("--out") ? process.argv[process.argv.indexOf("--out") + 1]! : join(ROOT, "bench-results");
const SEQUENTIAL = smoke ? 20 : quick ? 200 : 2_000;
const CONCURRENT_TOTAL = smoke ? 128 : quick ? 640 : 8_000;
const IN_FLIGHT = 64;
// Every row warms up the same way, so JIT compilation of a fresh process (toolbus, a server) is not measured.
const WARMUP = smoke ? 10 : quick ? 200 : 3_000;
/** `--only <text>`: run only the toolbus rows whose name contains it (the baselines always run). */
const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1]! : "";

type Call = () => Promise<unknown>;

interface Stats {
  calls: number;
  callsPerSec: number;
  p50: number;
  p95: number;
  p99: number;
}

function summarize(latencies: number[], elapsedMs: number): Stats {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const round = (n: number): number => Math.round(n * 1000) / 1000;
  return { calls: sorted.length, callsPerSec: Math.round((sorted.length / elapsedMs) * 1000), p50: round(at(0.5)), p95: round(at(0.95)), p99: round(at(0.99)) };
}

async function sequential(call: Call, n: number): Promise<Stats> {
  const latencies: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await call();
    latencies.push(performance.now() - s);
  }
  return summarize(latencies, performance.now() - t0);
}

async function concurrent(call: Call, total: number, inFlight: number): Promise<Stats> {
  const latencies: number[] = [];
  let issued = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (issued < total) {
        issued++;
        const s = performance.now();
        await call();
        latencies.push(performance.now() - s);
      }
    }),
  );
  return summarize(latencies, performance.now() - t0);
}

interface Row {
  name: string;
  transport: "stdio" | "http";
  sequential: Stats;
  concurrent: Stats;
}

async function measure(name: string, transport: Row["transport"], call: Call): Promise<Row> {
  await concurrent(call, WARMUP, 8);
  const seq = await sequential(call, SEQUENTIAL);
  const conc = await concurrent(call, CONCURRENT_TOTAL, IN_FLIGHT);
  process.stderr.write(`  ${name}: p50 ${seq.p50} ms, ${conc.callsPerSec} calls/s at ${IN_FLIGHT} in flight\n`);
  return { name, transport, sequential: seq, concurrent: conc };
}

async function main(): Promise<void> {
  process.stderr.write(
    `toolbus bench (${smoke ? "smoke" : quick ? "quick" : "full"}): ${SEQUENTIAL} sequential, ${CONCURRENT_TOTAL} at ${IN_FLIGHT} in flight per row\n`,
  );
  await using nats = await startNats();
  const http = await startFaultHttp();
  const rows: Row[] = [];
  const args = { message: "bench" };
  try {
    {
      await using direct = await directStdio([FAULT_SERVER]);
      rows.push(await measure("direct SDK, stdio", "stdio", () => direct.callTool({ name: "echo", arguments: args })));
    }
    {
      await using direct = await directHttp(http.url);
      rows.push(await measure("direct SDK, streamable HTTP", "http", () => direct.callTool({ name: "echo", arguments: args })));
    }
    // toolbus in its own process, as users run it; one stdio child so it compares with one direct client.
    const config = writeConfig({ admin: { port: -1 }, log: { level: "warn" }, backends: { stdio: faultStdio(1), http: httpBackend(http.url) } });
    // BENCH_PROFILE=dir writes a CPU profile of the toolbus process there (open it in Chrome DevTools).
    const nodeArgs = process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
    const up = runToolbus(["--config", config, "--nats", nats.url, "up"], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs });
    const client = await ToolbusClient.connect({ servers: nats.url });
    try {
      await waitForBackends(client, ["stdio", "http"]);
      for (const [backend, transport] of [
        ["stdio", "stdio"],
        ["http", "http"],
      ] as const) {
        for (const [via, direct] of [
          ["router", false],
          ["caller", true],
        ] as const) {
          const name = `toolbus ${via} → ${backend}`;
          if (name.includes(only)) rows.push(await measure(name, transport, () => client.callTool(backend, "echo", args, { timeoutMs: 10_000, direct })));
        }
      }
    } finally {
      await client.close();
      up.kill("SIGTERM");
      await up.exited;
    }
  } finally {
    await http.stop();
  }

  const baseline = (t: Row["transport"]): Row => rows.find((r) => r.transport === t && r.name.startsWith("direct"))!;
  const table = rows.map((r) => {
    const base = baseline(r.transport);
    return {
      scenario: r.name,
      "seq p50 ms": r.sequential.p50,
      "seq p95 ms": r.sequential.p95,
      "seq p99 ms": r.sequential.p99,
      "seq +p50 ms": Math.round((r.sequential.p50 - base.sequential.p50) * 1000) / 1000,
      "64× calls/s": r.concurrent.callsPerSec,
      "64× p50 ms": r.concurrent.p50,
      "64× p99 ms": r.concurrent.p99,
      "calls/s ÷ direct": Math.round((r.concurrent.callsPerSec / base.concurrent.callsPerSec) * 100) / 100,
    };
  });
  console.table(table);
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        when: new Date().toISOString(),
        quick,
        node: process.version,
        sequential: SEQUENTIAL,
        concurrentTotal: CONCURRENT_TOTAL,
        inFlight: IN_FLIGHT,
        rows,
        table,
      },
      null,
      2,
    ),
  );
  console.log(`wrote ${file}`);
}

await main();
