import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ToolbusClient } from "@toolbus/client";
import { compileConfig, isLlmBackend, type ToolbusConfig } from "@toolbus/config";
import { allWorkers } from "@toolbus/cli";
import { createLogger, runWorkers, type RunningProcess } from "@toolbus/runtime";
import { startNats, type TestNats } from "./nats-server.js";
import { TOOLBUS_BIN, ROOT } from "./paths.js";

/**
 * Compile a config for tests: admin server off, quiet logs, fast heartbeats, and no cache unless `raw`
 * asks for one: the fault server's read-only tools (`stats`, `sleep`, `hang`) would otherwise be cached
 * and share flights, which tests of other features do not expect. The cache's own tests turn it on.
 * No chat-log writer either, unless asked for (it would write into the repository's directory).
 */
export function testConfig(natsUrl: string, raw: Record<string, unknown>, env: Record<string, string> = {}): ToolbusConfig {
  return compileConfig(
    {
      admin: { port: -1 },
      log: { level: "silent" },
      heartbeat: 200,
      cache: { enabled: false },
      chatLog: { enabled: false },
      // The MCP front door only where a test asks for it (then on a free port: gateway: { port: 0 }).
      gateway: { enabled: false },
      nats: { servers: [natsUrl] },
      // The test run's HTTP transport (vitest's sdk-http-transport project sets it), as `toolbus` reads it.
      ...(process.env.TOOLBUS_MCP_HTTP_TRANSPORT ? { mcpHttp: { transport: process.env.TOOLBUS_MCP_HTTP_TRANSPORT } } : {}),
      ...raw,
    },
    { baseDir: ROOT, source: "(test)", env },
  );
}

/**
 * Temp dirs made by this process's tests and benches. A test file removes them in `afterAll`
 * (`removeTempDirs`): vitest ends its workers without running exit handlers. A plain script (the
 * bench) has them removed when it exits.
 */
const tempDirs = new Set<string>();
export function removeTempDirs(): void {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}
process.once("exit", removeTempDirs);

/** A temp dir that is removed when this process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Write a config file for the `toolbus` command and return its path (its dir goes when the process exits). */
export function writeConfig(raw: Record<string, unknown>): string {
  const dir = tempDir("toolbus-test-config-");
  const file = join(dir, "toolbus.json");
  // `toolbus up` runs the MCP front door too: on a free port, so processes of one test never clash.
  writeFileSync(file, JSON.stringify({ gateway: { port: 0 }, ...raw }, null, 2));
  return file;
}

export interface StartOptions {
  /** Every log line (all levels) goes here, e.g. to check what is never logged. */
  logs?: NodeJS.WritableStream;
  /** The environment the config reads (API keys of LLM backends). */
  env?: Record<string, string>;
}

/** Router and a caller per backend in this process, as `toolbus up` runs them. */
export async function startInProcess(config: ToolbusConfig, options: StartOptions = {}): Promise<RunningProcess & AsyncDisposable> {
  const logger = options.logs ? createLogger({ level: "trace", destination: options.logs }) : createLogger({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const proc = await runWorkers({
    name: "toolbus-test",
    config,
    logger,
    // The same composition as `toolbus up`, partial-start cleanup included.
    start: (deps) => allWorkers(deps, config),
  });
  return Object.assign(proc, { [Symbol.asyncDispose]: () => proc.stop() });
}

/** Wait until `check` returns true (polling), or fail after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
}

/** Wait until the router lists `backends` with a live caller and (but for the LLM backends in `llm`) a known tool list. */
export async function waitForBackends(client: ToolbusClient, backends: readonly string[], timeoutMs = 20_000, llm: readonly string[] = []): Promise<void> {
  await waitFor(
    `backends ${backends.join(", ")} to be live`,
    async () => {
      const listed = await client.listTools(undefined, { timeoutMs: 1_000 });
      return backends.every((b) => listed.some((l) => l.name === b && l.liveCallers > 0 && (l.tools !== null || llm.includes(b))));
    },
    timeoutMs,
  );
}

/** A `toolbus` command run as a child process, as a user would. */
export interface ToolbusProcess {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or the signal name). */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

export function runToolbus(
  args: readonly string[],
  options: { env?: Record<string, string>; cwd?: string; nodeArgs?: string[]; /** own process group, like a terminal job */ detached?: boolean } = {},
): ToolbusProcess {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), TOOLBUS_BIN, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, TOOLBUS_LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: options.detached ?? false,
  });
  let output = "";
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  return { child, output: () => output, exited, kill: (signal = "SIGTERM") => void child.kill(signal) };
}

/** Run `toolbus ...` to completion; resolves with exit code, stdout and stderr. */
export function toolbusCommand(args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [TOOLBUS_BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Child pids of `pid` (direct children), from /proc. */
export async function childPids(pid: number): Promise<number[]> {
  const { readdirSync, readFileSync } = await import("node:fs");
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Field 4 (after the parenthesised command, which may contain spaces) is the parent pid.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return pids;
}

/** Whether `pid` runs (a zombie, dead but not yet reaped by a parent that never will, does not). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no /proc (macOS): kill(pid, 0) is all there is
  }
}

/** A nats-server of the test's own, toolbus (router + callers) in this process, and a connected client. */
export interface Stack extends AsyncDisposable {
  readonly nats: TestNats;
  readonly toolbus: RunningProcess;
  readonly client: ToolbusClient;
}

/** Start a Stack with config `raw` (see testConfig) and wait until every configured backend is live. */
export async function startStack(raw: Record<string, unknown>, options: StartOptions = {}): Promise<Stack> {
  const nats = await startNats();
  const config = testConfig(nats.url, raw, options.env);
  const toolbus = await startInProcess(config, options);
  const client = await ToolbusClient.connect({ servers: nats.url });
  const llm = Object.values(config.backends)
    .filter(isLlmBackend)
    .map((b) => b.name);
  await waitForBackends(client, Object.keys(config.backends), 20_000, llm);
  return {
    nats,
    toolbus,
    client,
    [Symbol.asyncDispose]: async () => {
      await client.close();
      await toolbus.stop();
      await nats[Symbol.asyncDispose]();
    },
  };
}
