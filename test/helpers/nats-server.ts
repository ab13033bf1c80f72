import { spawn, type ChildProcess } from "node:child_process";
import { endWithUs } from "@toolbus/cli";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A nats-server of the test's own, on a free port of 127.0.0.1, with JetStream in a temp dir. */
export interface TestNats {
  readonly url: string;
  readonly port: number;
  /** Stop the server (SIGTERM) and wait for it to exit. */
  stop(): Promise<void>;
  /** Start it again on the same port. */
  start(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function launch(port: number, storeDir: string, args: readonly string[], logFile?: string): Promise<{ child: ChildProcess; port: number }> {
  // -p -1 lets the server pick a free port; it says which on stderr (or in its log file).
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir, ...args, ...(logFile ? ["-l", logFile] : [])], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Vitest ends a worker whose test timed out without exit handlers: the server must not outlive it.
  endWithUs(child, storeDir);
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`nats-server did not start: ${output}`));
    }, 10_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run nats-server (is it installed?): ${err.message}`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}: ${output}`));
    });
    const listening = (): boolean => {
      const match = /Listening for client connections on [^\s]+:(\d+)/.exec(output);
      if (!match) return false;
      clearTimeout(timer);
      clearInterval(poll);
      child.removeAllListeners("exit");
      child.stderr!.removeAllListeners("data");
      child.stderr!.resume();
      resolve({ child, port: Number(match[1]) });
      return true;
    };
    child.stderr!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      listening();
    });
    // With a log file the server writes there instead.
    const poll = setInterval(() => {
      if (logFile && existsSync(logFile)) {
        output = readFileSync(logFile, "utf8");
        listening();
      }
    }, 50);
    child.once("exit", () => clearInterval(poll));
  });
}

/** Servers still running in this process; ended if the test process exits without stopping them. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export interface StartNatsOptions {
  /** More nats-server arguments, e.g. `["-c", configFile]` for a server with authorization. */
  args?: readonly string[];
  /** Where the server logs (`-l`), for a test that reads what it refused. */
  logFile?: string;
}

export async function startNats(options: StartNatsOptions = {}): Promise<TestNats> {
  return ownServer(-1, options.args ?? [], options.logFile);
}

/** A nats-server of the test's own on `port` (-1: a free one) with a store of its own; `kill` signals it and waits. */
async function ownServer(port: number, args: readonly string[], logFile?: string): Promise<TestNats & { kill(signal: NodeJS.Signals): Promise<void> }> {
  const storeDir = mkdtempSync(join(tmpdir(), "toolbus-test-nats-"));
  const first = await launch(port, storeDir, args, logFile).catch((err: unknown) => {
    // A server that would not start leaves no store behind.
    rmSync(storeDir, { recursive: true, force: true });
    throw err;
  });
  let child = first.child;
  running.add(child);
  const kill = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  };
  return {
    url: `nats://127.0.0.1:${first.port}`,
    port: first.port,
    kill,
    stop: () => kill("SIGTERM"),
    start: async () => {
      running.delete(child);
      ({ child } = await launch(first.port, storeDir, args, logFile));
      running.add(child);
    },
    [Symbol.asyncDispose]: async () => {
      await kill("SIGTERM");
      running.delete(child);
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}

/** Three (or `size`) nats-servers clustered on loopback with JetStream, each with its own store. */
export interface TestNatsCluster {
  /** Every node's client URL, comma-separated (what toolbus's `nats.servers` or `--nats` takes). */
  readonly urls: string;
  readonly nodes: readonly TestNats[];
  /** The node whose client port is `port`. */
  nodeOn(port: number): TestNats;
  /** kill -9 node `i`: no lame duck, no goodbye. */
  kill(i: number): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startNatsCluster(size = 3): Promise<TestNatsCluster> {
  const { freePort } = await import("./mcp.js");
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const started = await Promise.allSettled(
    clientPorts.map((port, i) => {
      const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`);
      return ownServer(port, [
        "--server_name",
        `n${i}`,
        "--cluster_name",
        "toolbus-test",
        "--cluster",
        `nats://127.0.0.1:${routePorts[i]}`,
        "--routes",
        routes.join(","),
      ]);
    }),
  );
  const failed = started.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.all(started.map((r) => (r.status === "fulfilled" ? r.value[Symbol.asyncDispose]() : undefined)));
    throw failed.reason;
  }
  const nodes = started.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof ownServer>>>).value);
  return {
    urls: nodes.map((n) => n.url).join(","),
    nodes,
    nodeOn: (port) => nodes.find((n) => n.port === port)!,
    kill: (i) => nodes[i]!.kill("SIGKILL"),
    [Symbol.asyncDispose]: async () => {
      await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
    },
  };
}
