import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { LaunchConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { groupAlive, signalGroup, trackChild } from "./children.js";
import { Backoff } from "./endpoint.js";

/**
 * Runs the server under a small shell that also holds one end of a pipe from toolbus (fd 3). When
 * toolbus dies, even by SIGKILL, the pipe's read end sees EOF and the shell ends its whole process
 * group: a launched server never outlives the toolbus that started it. (A stdio child needs none of
 * this: it sees its stdin close.) The shell's traps are handlers, not `''`, so the server does not
 * inherit ignored signals; `wait` is repeated because a trapped signal interrupts it.
 */
const KEEPER = [
  '"$@" 3<&- &',
  "srv=$!",
  "trap 'kill -TERM $srv 2>/dev/null' TERM INT HUP",
  "(read _ <&3; kill -TERM -$$) </dev/null >/dev/null 2>&1 &",
  "watch=$!",
  "exec 3<&-",
  "wait $srv; code=$?",
  "while kill -0 $srv 2>/dev/null; do wait $srv; code=$?; done",
  "kill $watch 2>/dev/null",
  "exit $code",
].join("\n");

/**
 * A server process toolbus starts for an HTTP backend (`launch:` in the config). Started again with
 * backoff when it exits, until toolbus stops it.
 */
export class LaunchedServer {
  #child: ChildProcess | undefined;
  #stopping = false;
  #restart: NodeJS.Timeout | undefined;
  readonly #backoff = new Backoff(500, 30_000);
  /** When the current process started: one that ran a while resets the backoff. */
  #startedAt = 0;

  constructor(
    private readonly config: LaunchConfig,
    private readonly log: Logger,
    private readonly backend: string,
  ) {}

  /** The keeper shell's pid (the leader of the server's process group), while running. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  start(): void {
    if (this.#stopping) return;
    const child = spawn("/bin/sh", ["-c", KEEPER, "toolbus-launch", this.config.command, ...this.config.args], {
      cwd: this.config.cwd,
      env: { ...getDefaultEnvironment(), ...this.config.env },
      // fd 3: the pipe whose far end is ours; it closes when this process dies.
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      // Its own process group, so a Ctrl-C meant for toolbus does not stop it under calls in flight.
      detached: true,
    });
    this.#child = child;
    this.#startedAt = Date.now();
    trackChild(child);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => this.log.debug({ backend: this.backend, output: line }, "launched server output"));
    }
    child.on("exit", (code, signal) => {
      if (this.#child !== child || this.#stopping) return;
      this.#child = undefined;
      // A server that ran for a minute was fine; one that dies at once must not be restarted in a loop.
      if (Date.now() - this.#startedAt > 60_000) this.#backoff.reset();
      const wait = this.#backoff.next();
      this.log.warn({ backend: this.backend, code, signal, restartInMs: wait }, "launched server exited; starting it again");
      this.#restart = setTimeout(() => this.start(), wait);
      this.#restart.unref();
    });
    child.on("error", (err) => this.log.error({ backend: this.backend, err: err.message }, "could not launch server"));
    this.log.info({ backend: this.backend, pid: child.pid, command: this.config.command }, "launched HTTP backend server");
  }

  /** SIGTERM to the server's whole group; SIGKILL after 3 s; resolves once every process in it is gone. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restart);
    const child = this.#child;
    this.#child = undefined;
    if (!child?.pid) return;
    signalGroup(child, "SIGTERM");
    const deadline = Date.now() + 3_000;
    while (groupAlive(child.pid)) {
      if (Date.now() > deadline) {
        signalGroup(child, "SIGKILL");
        break;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    // SIGKILL cannot be refused; the short wait is for the kernel to reap.
    for (let i = 0; i < 40 && groupAlive(child.pid); i++) await new Promise((r) => setTimeout(r, 25));
  }
}
