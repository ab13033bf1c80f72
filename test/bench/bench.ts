/**
 * npm run bench [-- --quick] [-- --out dir]
 *
 * The echo tool of a local MCP server (the project's fault server), measured in one run:
 * direct MCP SDK over stdio and over streamable HTTP (the baselines), then through toolbus to each,
 * by the router's subject and straight to the caller's. Sequential calls and 64 in flight; p50/p95/p99
 * and calls/s; ratios against the direct SDK over the same transport. Writes JSON under bench-results/.
 * BENCH_PROFILE=<dir> writes a CPU profile of the toolbus process; --only <text> picks toolbus rows
 * (`--only recovery`: the recovery figures alone, see recovery.ts; `--only "router → cache"`: the cache rows;
 * `--only chat`: the chat-log writer's figures, see chat.ts; `--only llm`: the LLM figures, see llm.ts;
 * `--only gateway`: the MCP front door beside mcp-proxy and supergateway, see gateway.ts).
 * Rows other than the cache's bypass the cache, so they measure the path to the backend.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ToolbusClient } from "@toolbus/client";
import { directHttp, directStdio, faultStdio, freePort, httpBackend, startFaultHttp } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { FAULT_SERVER, ROOT } from "../helpers/paths.js";
import { runToolbus, tempDir, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";
import { zipfBench, type ZipfFigures } from "./cache.js";
import { chatBench, type ChatFigures } from "./chat.js";
import { gatewayBench, type GatewayRow } from "./gateway.js";
import { llmBench, type LlmFigures, type LlmRow } from "./llm.js";
import { closedLoop, cpuMicros, quantile } from "./measure.js";
import { openLoop, startMoleculerPeer, type OpenLoopFigures } from "./peers.js";
import { NODE_FLAGS, startupBench, type StartupFigures } from "./startup.js";
import { recoveryBench, type RecoveryFigures } from "./recovery.js";

const quick = process.argv.includes("--quick");
/** --smoke: a few calls per row, for the test that keeps the bench from rotting. */
const smoke = process.argv.includes("--smoke");
const outDir = process.argv.includes("--out") ? process.argv[process.argv.indexOf("--out") + 1]! : join(ROOT, "bench-results");
const SEQUENTIAL = smoke ? 20 : quick ? 200 : 2_000;
const CONCURRENT_TOTAL = smoke ? 128 : quick ? 640 : 8_000;
const IN_FLIGHT = 64;
// Every row warms up the same way, so JIT compilation of a fresh process (toolbus, a server) is not measured.
const WARMUP = smoke ? 10 : quick ? 200 : 3_000;
/** Open loop (`--rate 1000[,2000…] --max-in-flight 50 --seconds 20`): the rates, the cap on calls out, and how long each runs. */
const flag = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const OPEN_LOOP_RATES = (flag("--rate") ?? "1000,2000,4000").split(",").map(Number);
const OPEN_LOOP_MAX_IN_FLIGHT = Number(flag("--max-in-flight") ?? 50);
const OPEN_LOOP_SECONDS = Number(flag("--seconds") ?? (smoke ? 0.5 : quick ? 2 : 5));
/** `--only <text>`: run only the toolbus rows whose name contains it (the baselines always run). */
const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1]! : "";

type Call = () => Promise<unknown>;

/**
 * The direct-SDK HTTP baseline: undici adds an abort listener per request to the SDK transport's one
 * long-lived signal and drops it only when the request is garbage-collected, so at bench rates Node
 * warns (MaxListenersExceededWarning) thousands of times. That is the baseline's own behaviour (toolbus
 * gives each request a signal of its own); the bench counts those warnings and says so once.
 */
let listenerWarnings = 0;
process.removeAllListeners("warning");
process.on("warning", (warning) => {
  if (warning.name === "MaxListenersExceededWarning") listenerWarnings++;
  else process.stderr.write(`${warning.name}: ${warning.message}\n`);
});

interface Stats {
  calls: number;
  callsPerSec: number;
  p50: number;
  p95: number;
  p99: number;
}

function summarize(latencies: number[], elapsedMs: number): Stats {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number): number => quantile(sorted, q);
  const round = (n: number): number => Math.round(n * 1000) / 1000;
  return { calls: sorted.length, callsPerSec: Math.round((sorted.length / elapsedMs) * 1000), p50: round(at(0.5)), p95: round(at(0.95)), p99: round(at(0.99)) };
}

async function sequential(call: Call, n: number): Promise<Stats> {
  const { latencies, elapsedMs } = await closedLoop(call, n, 1);
  return summarize(latencies, elapsedMs);
}

async function concurrent(call: Call, total: number, inFlight: number): Promise<Stats> {
  const { latencies, elapsedMs } = await closedLoop(call, total, inFlight);
  return summarize(latencies, elapsedMs);
}

/**
 * The upper bound (ms) of the histogram bucket holding quantile `q` of the series with `labels`, from
 * Prometheus text; undefined when there is no such series.
 */
function histogramQuantileMs(metrics: string, labels: Record<string, string>, q: number): number | undefined {
  const buckets: Array<{ le: number; count: number }> = [];
  for (const line of metrics.split("\n")) {
    const match = /^toolbus_request_duration_seconds_bucket\{([^}]*)\} (\d+)/.exec(line);
    if (!match) continue;
    const set = Object.fromEntries([...match[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => set[k] === v)) buckets.push({ le: set.le === "+Inf" ? Infinity : Number(set.le), count: Number(match[2]) });
  }
  const total = buckets.at(-1)?.count;
  if (!total) return undefined;
  return buckets.find((b) => b.count >= q * total)!.le * 1000;
}

interface Row {
  name: string;
  transport: "stdio" | "http";
  sequential: Stats;
  concurrent: Stats;
  /** CPU of the toolbus process per call at 64 in flight, µs. */
  cpuMicrosPerCall?: number;
}

/** Measure a row; with `pid`, also that process's CPU per call at 64 in flight (steadier than calls/s on a shared machine). */
async function measure(name: string, transport: Row["transport"], call: Call, pid?: number): Promise<Row> {
  await concurrent(call, WARMUP, 8);
  const seq = await sequential(call, SEQUENTIAL);
  const cpuBefore = pid === undefined ? 0 : cpuMicros(pid);
  const conc = await concurrent(call, CONCURRENT_TOTAL, IN_FLIGHT);
  const cpuMicrosPerCall = pid === undefined ? undefined : Math.round((cpuMicros(pid) - cpuBefore) / CONCURRENT_TOTAL);
  process.stderr.write(`  ${name}: p50 ${seq.p50} ms, ${conc.callsPerSec} calls/s at ${IN_FLIGHT} in flight\n`);
  return { name, transport, sequential: seq, concurrent: conc, cpuMicrosPerCall };
}

async function main(): Promise<void> {
  process.stderr.write(
    `toolbus bench (${smoke ? "smoke" : quick ? "quick" : "full"}): ${SEQUENTIAL} sequential, ${CONCURRENT_TOTAL} at ${IN_FLIGHT} in flight per row\n`,
  );
  await using nats = await startNats();
  const http = await startFaultHttp();
  const rows: Row[] = [];
  const policiesOn: Row[] = [];
  const policiesOff: Row[] = [];
  const rejections: Array<{ code: string; callerP99AtMostMs: number | undefined } & Stats> = [];
  let zipf: ZipfFigures | undefined;
  let chat: ChatFigures | undefined;
  const loggingOn: Row[] = [];
  const openLoopRows: Array<{ path: string } & OpenLoopFigures> = [];
  const loggingOff: Row[] = [];
  const args = { message: "bench" };
  try {
    {
      await using direct = await directStdio([FAULT_SERVER]);
      rows.push(await measure("direct SDK, stdio", "stdio", () => direct.callTool({ name: "echo", arguments: args })));
    }
    {
      await using direct = await directHttp(http.url);
      rows.push(await measure("direct SDK, streamable HTTP", "http", () => direct.callTool({ name: "echo", arguments: args })));
      if (listenerWarnings > 0)
        process.stderr.write(
          `  (the direct SDK over HTTP drew ${listenerWarnings} MaxListenersExceededWarning: undici's per-request abort listeners on the SDK's long-lived signal)\n`,
        );
    }
    // toolbus in its own process, as users run it; one stdio child so it compares with one direct client.
    const adminPort = await freePort();
    const config = writeConfig({
      admin: { port: adminPort },
      log: { level: "warn" },
      // The chat-log writer runs in a process of its own (as deployed), started for the logged row.
      chatLog: { enabled: false, dir: tempDir("toolbus-bench-chatlog-") },
      backends: {
        stdio: faultStdio(1),
        http: httpBackend(http.url),
        // The same server through the MCP SDK's own client transport (the fallback), beside the lean one.
        "http-sdk": { ...httpBackend(http.url), transport: "sdk" },
        // The same server with every policy off, to show what the policies cost.
        "stdio-bare": { ...faultStdio(1), policies: false },
        // Backends that turn every call away, to time the rejections.
        open: { ...faultStdio(1), breaker: { volume: 1, recovery: "1h" } },
        limited: { ...faultStdio(1), rateLimit: { rate: 0.001, burst: 1 } },
        full: { ...faultStdio(1), bulkhead: { maxConcurrent: 1, maxQueue: 0 } },
      },
    });
    // BENCH_PROFILE=dir writes a CPU profile of the toolbus process there (open it in Chrome DevTools).
    // Run as `npm start` runs it (NODE_FLAGS), profiled on request.
    const nodeArgs = [
      ...NODE_FLAGS,
      ...(process.env.BENCH_PROFILE ? ["--cpu-prof", "--cpu-prof-interval=100", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
    ];
    const up = runToolbus(["--config", config, "--nats", nats.url, "up"], { env: { TOOLBUS_LOG_LEVEL: "warn" }, nodeArgs });
    const client = await ToolbusClient.connect({ servers: nats.url });
    try {
      await waitForBackends(client, ["stdio", "http", "http-sdk", "stdio-bare", "open", "limited", "full"]);
      for (const [backend, transport] of [
        ["stdio", "stdio"],
        ["http", "http"],
        ["http-sdk", "http"],
      ] as const) {
        for (const [via, direct] of [
          ["router", false],
          ["caller", true],
        ] as const) {
          const name = backend === "http-sdk" ? `toolbus ${via} → http (SDK transport)` : `toolbus ${via} → ${backend}`;
          if (name.includes(only))
            rows.push(
              await measure(name, transport, () => client.callTool(backend, "echo", args, { timeoutMs: 10_000, direct, cache: "bypass" }), up.child.pid),
            );
        }
      }
      if (only === "" || "moleculer service → stdio".includes(only) || only === "open-loop") {
        // The peer: Moleculer on the same NATS, one hop to the same stdio server through the same SDK client.
        const peer = await startMoleculerPeer(nats.url);
        try {
          const viaPeer = (): Promise<unknown> => peer.call("echo", args);
          rows.push(await measure("Moleculer service → stdio (one hop)", "stdio", viaPeer, peer.pid));
          // Open loop: a schedule of sends, not a reply-driven loop; each path at each rate, side by side.
          const paths: Array<[string, () => Promise<unknown>]> = [
            ["toolbus router → stdio", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, cache: "bypass" })],
            ["toolbus caller → stdio", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, direct: true, cache: "bypass" })],
            ["Moleculer service → stdio", viaPeer],
          ];
          // Warm each path first, as every closed-loop row is: a cold process's JIT is not what is measured.
          for (const [, call] of paths) await concurrent(call, WARMUP, 8);
          for (const rate of OPEN_LOOP_RATES)
            for (const [name, call] of paths) {
              const figures = await openLoop(call, rate, OPEN_LOOP_MAX_IN_FLIGHT, OPEN_LOOP_SECONDS);
              openLoopRows.push({ path: name, ...figures });
              process.stderr.write(`  open loop ${rate}/s, ${name}: p99 ${figures.p99} ms, ${figures.drops} drops\n`);
            }
        } finally {
          await peer.stop();
        }
      }
      if ("toolbus router → cache".includes(only) || only === "") {
        // A hit: the same arguments every time (the first call stores them). A miss: new arguments every
        // time, so each goes router → cache → caller → backend and is then stored.
        await waitFor("the router to use the cache", async () => {
          await client.callTool("stdio", "echo", args, { timeoutMs: 10_000 });
          return (await client.callTool("stdio", "echo", args, { timeoutMs: 10_000 })).meta.cached === "l1";
        });
        rows.push(await measure("toolbus router → cache hit", "stdio", () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000 }), up.child.pid));
        let n = 0;
        rows.push(
          await measure(
            "toolbus router → cache miss → stdio",
            "stdio",
            () => client.callTool("stdio", "echo", { message: `miss-${n++}` }, { timeoutMs: 10_000 }),
            up.child.pid,
          ),
        );
        zipf = await zipfBench(client, "stdio", smoke ? 500 : quick ? 5_000 : 20_000, IN_FLIGHT);
      }
      if ("toolbus router → stdio, logged in a conversation".includes(only) || only === "") {
        // The same calls as "router → stdio", each logged (tool_call and tool_result events): what logging adds.
        const writer = runToolbus(["--config", config, "--nats", nats.url, "--log-level", "warn", "worker", "chat-log-writer"]);
        try {
          // Unlogged and logged alternate three times (a noisy neighbour favours neither); the first logged
          // round is also a row of the main table.
          for (let round = 0; round < 3; round++) {
            loggingOff.push(
              await measure(
                "router → stdio (unlogged)",
                "stdio",
                () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, cache: "bypass" }),
                up.child.pid,
              ),
            );
            const logged = await measure(
              "toolbus router → stdio, logged in a conversation",
              "stdio",
              () => client.callTool("stdio", "echo", args, { timeoutMs: 10_000, cache: "bypass", conversationId: "bench" }),
              up.child.pid,
            );
            loggingOn.push(logged);
            if (round === 0) rows.push(logged);
          }
        } finally {
          writer.kill("SIGTERM");
          await writer.exited;
        }
      }
      if ("policies".includes(only) || only === "") {
        // On and off alternate twice, so a noisy neighbour does not favour either side.
        for (let round = 0; round < 3; round++) {
          for (const [backend, label] of [
            ["stdio", "on"],
            ["stdio-bare", "off"],
          ] as const) {
            const row = await measure(
              `policies ${label} (caller → stdio)`,
              "stdio",
              () => client.callTool(backend, "echo", args, { timeoutMs: 10_000, direct: true, cache: "bypass" }),
              up.child.pid,
            );
            (label === "on" ? policiesOn : policiesOff).push(row);
          }
        }
        // Open the breaker, spend the only token, fill the only slot: then every call is turned away.
        await client.callTool("open", "rpc-error", {}, { timeoutMs: 5_000, direct: true }).catch(() => undefined);
        await client.callTool("limited", "echo", args, { timeoutMs: 5_000, direct: true });
        void client.callTool("full", "hang", {}, { timeoutMs: 600_000, direct: true }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
        for (const [backend, code, tool] of [
          ["open", "CIRCUIT_OPEN", "echo"],
          ["limited", "RATE_LIMITED", "echo"],
          ["full", "OVERLOADED", "echo"],
        ] as const) {
          const rejected = (): Promise<void> =>
            client.callTool(backend, tool, args, { timeoutMs: 5_000, direct: true, cache: "bypass" }).then(
              () => Promise.reject(new Error(`${backend}: expected ${code}`)),
              (err: { code?: string }) => (err.code === code ? undefined : Promise.reject(err)),
            );
          await sequential(rejected, WARMUP);
          const seen = await sequential(rejected, SEQUENTIAL);
          // The caller's own time for these rejections, from its histogram (bucket bounds: 0.1, 0.25, 0.5, 1 ms…).
          const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
          rejections.push({ code, ...seen, callerP99AtMostMs: histogramQuantileMs(metrics, { worker: "caller", backend, outcome: code }, 0.99) });
        }
      }
    } finally {
      await client.close();
      up.kill("SIGTERM");
      await up.exited;
      // toolbus itself must run without a Node warning (its own warn logs here come from the rejections the bench provokes).
      const warnings = up
        .output()
        .split("\n")
        .filter((line) => /\(node:\d+\) \w*Warning/.test(line));
      if (warnings.length > 0) process.stderr.write(`toolbus printed ${warnings.length} Node warning(s):\n${warnings.slice(0, 5).join("\n")}\n`);
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
      "toolbus CPU µs/call": r.cpuMicrosPerCall ?? "–",
    };
  });
  console.table(table);
  const peer = rows.find((r) => r.name.startsWith("Moleculer"));
  if (peer) {
    console.log("\nagainst the peer (Moleculer service on the same NATS, one hop to the same stdio server), this run:");
    console.table(
      rows
        .filter((r) => r.name === "toolbus router → stdio" || r.name === "toolbus caller → stdio")
        .map((r) => ({
          path: r.name,
          "CPU µs/call": r.cpuMicrosPerCall ?? "–",
          "peer CPU µs/call": peer.cpuMicrosPerCall ?? "–",
          "64× calls/s ÷ peer": Math.round((r.concurrent.callsPerSec / peer.concurrent.callsPerSec) * 100) / 100,
          "seq p50 + over direct ms": Math.round((r.sequential.p50 - baseline("stdio").sequential.p50) * 1000) / 1000,
          "peer seq p50 + over direct ms": Math.round((peer.sequential.p50 - baseline("stdio").sequential.p50) * 1000) / 1000,
        })),
    );
  }
  if (openLoopRows.length) {
    console.log(`\nopen loop (sends on a schedule; at most ${OPEN_LOOP_MAX_IN_FLIGHT} in flight; ${OPEN_LOOP_SECONDS} s per row; latency from each send):`);
    console.table(
      openLoopRows.map((r) => ({
        path: r.path,
        "target /s": r.targetRate,
        "achieved /s": r.achievedRate,
        "p50 ms": r.p50,
        "p95 ms": r.p95,
        "p99 ms": r.p99,
        "max ms": r.max,
        drops: r.drops,
        "send lag ms": r.lagMs,
        errors:
          Object.entries(r.errors)
            .map(([code, n]) => `${code}×${n}`)
            .join(" ") || "0",
      })),
    );
  }
  const mean = (rs: Row[], f: (r: Row) => number): number => Math.round((rs.reduce((a, r) => a + f(r), 0) / Math.max(1, rs.length)) * 1000) / 1000;
  const policies = policiesOn.length
    ? {
        "on: 64× calls/s": mean(policiesOn, (r) => r.concurrent.callsPerSec),
        "off: 64× calls/s": mean(policiesOff, (r) => r.concurrent.callsPerSec),
        "on ÷ off calls/s": Math.round((mean(policiesOn, (r) => r.concurrent.callsPerSec) / mean(policiesOff, (r) => r.concurrent.callsPerSec)) * 100) / 100,
        "on: seq p50 ms": mean(policiesOn, (r) => r.sequential.p50),
        "off: seq p50 ms": mean(policiesOff, (r) => r.sequential.p50),
        "on − off p50 ms": Math.round((mean(policiesOn, (r) => r.sequential.p50) - mean(policiesOff, (r) => r.sequential.p50)) * 1000) / 1000,
        "on: toolbus CPU µs/call": mean(policiesOn, (r) => r.cpuMicrosPerCall ?? 0),
        "off: toolbus CPU µs/call": mean(policiesOff, (r) => r.cpuMicrosPerCall ?? 0),
      }
    : undefined;
  if (policies) {
    console.log("\npolicies on vs off (caller → stdio, mean of 3 alternating rounds each):");
    console.table([policies]);
    console.log("\nrejected calls, sequential, as the client sees them (NATS round trip included):");
    console.table(rejections.map((r) => ({ rejection: r.code, "client p50 ms": r.p50, "client p99 ms": r.p99, "caller p99 ≤ ms": r.callerP99AtMostMs })));
  }
  const hit = rows.find((r) => r.name === "toolbus router → cache hit");
  const uncached = rows.find((r) => r.name === "toolbus router → stdio");
  const cache =
    hit && uncached
      ? {
          "hit p50 ms": hit.sequential.p50,
          "hit p99 ms": hit.sequential.p99,
          "hit 64× calls/s": hit.concurrent.callsPerSec,
          "hit ÷ uncached router→stdio calls/s": Math.round((hit.concurrent.callsPerSec / uncached.concurrent.callsPerSec) * 100) / 100,
          "hit ÷ direct SDK calls/s": Math.round((hit.concurrent.callsPerSec / baseline("stdio").concurrent.callsPerSec) * 100) / 100,
        }
      : undefined;
  if (cache) {
    console.log("\ncache hits through the router, against the uncached router path and the direct SDK in this run:");
    console.table([cache]);
  }
  if (zipf) {
    console.log(`\nZipf workload through the router (${zipf.distinct} distinct argument sets, s = ${zipf.s}, ${IN_FLIGHT} in flight, from a cold cache):`);
    console.table([
      {
        calls: zipf.calls,
        "hit ratio": zipf.hitRatio,
        "L1 hits": zipf.l1Hits,
        "L2 hits": zipf.l2Hits,
        "backend calls": zipf.backendCalls,
        "backend calls saved": zipf.backendCallsSaved,
        "calls/s": zipf.callsPerSec,
      },
    ]);
  }
  const logging = loggingOn.length
    ? {
        "unlogged seq p50 ms": mean(loggingOff, (r) => r.sequential.p50),
        "logged seq p50 ms": mean(loggingOn, (r) => r.sequential.p50),
        "+ p50 ms": Math.round((mean(loggingOn, (r) => r.sequential.p50) - mean(loggingOff, (r) => r.sequential.p50)) * 1000) / 1000,
        "logged ÷ unlogged calls/s":
          Math.round((mean(loggingOn, (r) => r.concurrent.callsPerSec) / mean(loggingOff, (r) => r.concurrent.callsPerSec)) * 100) / 100,
        "unlogged: toolbus CPU µs/call": mean(loggingOff, (r) => r.cpuMicrosPerCall ?? 0),
        "logged: toolbus CPU µs/call": mean(loggingOn, (r) => r.cpuMicrosPerCall ?? 0),
      }
    : undefined;
  if (logging) {
    console.log("\nwhat logging a call in a conversation adds (router → stdio; mean of 3 alternating rounds each; writer in its own process):");
    console.table([logging]);
  }
  if (!smoke && (only === "" || only === "chat")) {
    chat = await chatBench(quick ? 5_000 : 20_000);
    console.log(`\nchat log (${chat.events} events waiting in the stream, 20 conversations; then ${chat.steadyRate} events/s steady, one writer):`);
    console.table([
      {
        "1 writer events/s": chat.oneWriterEventsPerSec,
        "3 writers events/s": chat.threeWritersEventsPerSec,
        "publish → fsynced p50 ms": chat.publishToDurableP50Ms,
        "publish → fsynced p99 ms": chat.publishToDurableP99Ms,
      },
    ]);
  }
  // Recovery takes its time (a backend must be declared dead): not in a smoke run; `--only recovery` runs it.
  let recovery: RecoveryFigures | undefined;
  if (!smoke && (only === "" || only === "recovery")) {
    recovery = await recoveryBench(nats.url);
    console.log("\nrecovery (10 calls/s per backend; health probes every 1 s, unhealthy after 3):");
    console.table([
      {
        "death → CIRCUIT_OPEN, health-driven ms": recovery.healthDrivenOpenMs,
        "death → unhealthy event ms": recovery.unhealthyEventMs,
        "death → refused, failure-driven ms": recovery.failureDrivenRefusedMs,
        "failure-driven code": recovery.failureDrivenCode,
        "new port listening → first ok call ms": recovery.newPortFirstSuccessMs,
      },
    ]);
  }
  let startup: StartupFigures | undefined;
  if (!smoke && (only === "" || only === "startup")) {
    startup = await startupBench(nats.url);
    console.log("\nstart-up and memory (toolbus up with server-everything over stdio and HTTP and an LLM backend; then each worker alone):");
    console.table([
      {
        "launch → router started ms": startup.routerReadyMs,
        "launch → first call answered ms": startup.firstCallMs,
        "toolbus up RSS MB": startup.upRssMb,
        "up RSS MB, plain node": startup.upPlainNodeRssMb,
        ...Object.fromEntries(Object.entries(startup.workerRssMb).map(([k, v]) => [`${k} RSS MB`, v])),
      },
    ]);
  }
  let llm: LlmFigures | undefined;
  if (only === "" || only === "llm") {
    llm = await llmBench(nats.url, { sequential: SEQUENTIAL, concurrent: CONCURRENT_TOTAL, warmup: WARMUP, streams: smoke ? 10 : quick ? 100 : 500 });
    const [direct, through] = llm.rows as [LlmRow, LlmRow];
    console.log("\nLLM calls (non-streamed) against the local OpenAI-compatible server: the official openai client, and through toolbus:");
    console.table(
      llm.rows.map((r) => ({
        scenario: r.name,
        "seq p50 ms": r.seqP50,
        "seq p99 ms": r.seqP99,
        "seq +p50 ms": Math.round((r.seqP50 - direct.seqP50) * 1000) / 1000,
        "64× calls/s": r.callsPerSec,
        "64× p50 ms": r.p50At64,
        "64× p99 ms": r.p99At64,
        "calls/s ÷ direct": Math.round((r.callsPerSec / direct.callsPerSec) * 100) / 100,
      })),
    );
    console.log("\nLLM streams: time to the first token, and connection reuse through toolbus:");
    console.table([
      {
        "direct TTFT p50 ms": llm.ttft.direct.p50,
        "toolbus TTFT p50 ms": llm.ttft.toolbus.p50,
        "+ TTFT p50 ms": Math.round((llm.ttft.toolbus.p50 - llm.ttft.direct.p50) * 1000) / 1000,
        "toolbus requests": llm.reuse.requests,
        "connections opened": llm.reuse.connections,
        "connection reuse": llm.reuse.ratio,
        "toolbus ÷ direct calls/s": Math.round((through.callsPerSec / direct.callsPerSec) * 100) / 100,
      },
    ]);
  }
  let gateway: GatewayRow[] | undefined;
  if (only === "" || only === "gateway") {
    gateway = await gatewayBench(nats.url, { sequential: SEQUENTIAL, concurrent: CONCURRENT_TOTAL, warmup: WARMUP });
    const direct = gateway[0]!;
    const peers = gateway.filter((r) => r.name.startsWith("mcp-proxy") || r.name.startsWith("supergateway"));
    const fastestPeer = Math.max(...peers.map((r) => r.callsPerSec));
    console.log("\nMCP front door: an MCP client (the SDK's, streamable HTTP) calling server-everything's echo through each, one run:");
    console.table(
      gateway.map((r) => ({
        path: r.name,
        "seq p50 ms": r.seqP50,
        "seq p99 ms": r.seqP99,
        "64× calls/s": r.callsPerSec,
        "64× p50 ms": r.p50At64,
        "64× p99 ms": r.p99At64,
        "calls/s ÷ direct": Math.round((r.callsPerSec / direct.callsPerSec) * 100) / 100,
        "calls/s ÷ faster peer": Math.round((r.callsPerSec / fastestPeer) * 100) / 100,
        "CPU µs/call (middle process)": r.cpuMicrosPerCall ?? "–",
      })),
    );
  }
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        when: new Date().toISOString(),
        quick,
        smoke,
        node: process.version,
        sequential: SEQUENTIAL,
        concurrentTotal: CONCURRENT_TOTAL,
        inFlight: IN_FLIGHT,
        rows,
        table,
        policies,
        policiesOn,
        policiesOff,
        rejections,
        cache,
        zipf,
        logging,
        chat,
        recovery,
        llm,
        startup,
        gateway,
        openLoop: openLoopRows,
      },
      null,
      2,
    ),
  );
  console.log(`wrote ${file}`);
}

await main();
