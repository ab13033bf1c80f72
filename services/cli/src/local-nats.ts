import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** host and port of a nats:// URL (default port 4222). */
export function hostPort(url: string): { host: string; port: number } {
  const parsed = new URL(url.includes("://") ? url : `nats://${url}`);
  return { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: parsed.port ? Number(parsed.port) : 4222 };
}

/** True when something accepts TCP connections at host:port within `timeoutMs`. */
export function isListening(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

export interface LocalNats {
  readonly url: string;
  readonly pid: number | undefined;
  readonly storeDir: string;
  stop(): Promise<void>;
}

export const NO_NATS_HELP = [
  "toolbus needs a NATS server with JetStream. Either:",
  "  - install one: apt-get install nats-server  (Debian/Ubuntu)  or  brew install nats-server  (macOS),",
  "    then run `toolbus up` again (it starts nats-server for you when nothing answers on localhost), or",
  "  - have docker or podman answer: `toolbus up` then starts NATS in a container (image: $TOOLBUS_NATS_IMAGE,",
  "    default docker.io/library/nats:2.10-alpine), or run one yourself: docker run -p 4222:4222 nats -js, or",
  "  - point toolbus at yours: toolbus up --nats nats://host:4222  (or TOOLBUS_NATS_URL).",
].join("\n");

/** Whether a `nats-server` binary is on the PATH. */
export function natsServerOnPath(): boolean {
  return spawnSync("nats-server", ["--version"], { stdio: "ignore" }).status === 0;
}

/**
 * Run the shell `script` (with `args` as $1...) when this process dies, even by SIGKILL: the shell holds
 * a pipe from us and its read ends when we are gone. It keeps nothing of ours alive; kill the returned
 * watcher once the script is no longer needed.
 */
function whenWeDie(script: string, args: readonly string[]): ChildProcess {
  const watcher = spawn("/bin/sh", ["-c", `read _ <&3; ${script}`, "toolbus-end-with-us", ...args], {
    stdio: ["ignore", "ignore", "ignore", "pipe"],
    detached: true,
  });
  watcher.unref();
  (watcher.stdio[3] as Socket).unref();
  return watcher;
}

/** Stop `child` (and remove `dir`) when this process dies, even by SIGKILL; nothing is left once `child` exits. */
export function endWithUs(child: ChildProcess, dir: string): void {
  if (child.pid === undefined) return;
  const watcher = whenWeDie(`kill -TERM ${child.pid} 2>/dev/null; sleep 1; rm -rf "$1"`, [dir]);
  child.once("exit", () => watcher.kill("SIGKILL"));
}

/**
 * Start `nats-server` with JetStream in a temporary directory, listening on host:port, and wait
 * until it accepts connections. The store directory is removed on stop.
 */
export async function startLocalNats(host: string, port: number, timeoutMs = 10_000): Promise<LocalNats> {
  const storeDir = mkdtempSync(join(tmpdir(), "toolbus-nats-"));
  // Its own process group: a Ctrl-C in the terminal reaches toolbus, which drains its workers and then
  // stops this server, instead of the server going first and every worker logging a lost connection.
  const child: ChildProcess = spawn("nats-server", ["-a", host, "-p", String(port), "-js", "-sd", storeDir], {
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
  endWithUs(child, storeDir);
  let output = "";
  child.stderr?.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4_000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + timeoutMs;
  while (!(await isListening(host, port, 200))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      rmSync(storeDir, { recursive: true, force: true });
      throw new Error(`nats-server did not start on ${host}:${port}: ${output.trim().split("\n").slice(-3).join(" | ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `nats://${host}:${port}`,
    pid: child.pid,
    storeDir,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}

/** The NATS image `toolbus up` runs when there is no nats-server binary (TOOLBUS_NATS_IMAGE overrides it). */
export const DEFAULT_NATS_IMAGE = "docker.io/library/nats:2.10-alpine";

/** A container CLI whose engine answers (podman, then docker), or undefined. */
export function containerCli(): string | undefined {
  for (const cli of ["podman", "docker"]) {
    if (spawnSync(cli, ["info"], { stdio: "ignore", timeout: 15_000 }).status === 0) return cli;
  }
  return undefined;
}

/** Resolves once a NATS server answers at host:port with its INFO line (a published port may accept before it). */
async function natsAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("data", (chunk: Buffer) => done(chunk.toString("latin1").startsWith("INFO ")));
    socket.once("error", () => done(false));
    socket.once("end", () => done(false));
  });
}

/**
 * Start NATS with JetStream in a container (`<cli> run -d --rm`, host:port published) and wait until it
 * answers. The container goes when toolbus stops, and also when toolbus is killed: a watcher removes it.
 */
export async function startContainerNats(cli: string, image: string, host: string, port: number, timeoutMs = 120_000): Promise<LocalNats> {
  const name = `toolbus-nats-${port}-${process.pid}`;
  const started = spawnSync(cli, ["run", "-d", "--rm", "--name", name, "-p", `${host}:${port}:4222`, image, "-js"], { encoding: "utf8", timeout: timeoutMs });
  if (started.status !== 0) {
    const why = `${started.stderr ?? ""}${started.error?.message ?? ""}`.trim().split("\n").slice(-2).join(" | ");
    throw new Error(`${cli} could not start ${image}: ${why}`);
  }
  // Killed or crashed, toolbus still takes its container with it.
  const watcher = whenWeDie(`"$1" rm -f "$2" >/dev/null 2>&1`, [cli, name]);
  const remove = (): void => void spawnSync(cli, ["rm", "-f", name], { stdio: "ignore", timeout: 30_000 });
  const deadline = Date.now() + timeoutMs;
  while (!(await natsAnswers(host, port))) {
    if (Date.now() > deadline) {
      remove();
      watcher.kill("SIGKILL");
      throw new Error(`NATS in container ${name} (${image}) did not answer on ${host}:${port}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `nats://${host}:${port}`,
    pid: undefined,
    storeDir: `container ${name}`,
    stop: async () => {
      spawnSync(cli, ["stop", "-t", "5", name], { stdio: "ignore", timeout: 30_000 });
      remove();
      watcher.kill("SIGKILL");
    },
  };
}
