import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { LaunchConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { groupAlive, signalGroup, trackChild } from "./children.js";
import { Backoff } from "./endpoint.js";

/**
 * Runs the server under a small shell that also holds one end of a pipe from toolbus (fd 3), with a
 * watcher reading it. When toolbus dies, even by SIGKILL, the pipe sees EOF: the watcher sends the
 * server SIGTERM, then SIGKILL to the whole process group 3 s later. When the server exits on its own,
 * the shell ends whatever else of its group is left (the children of an `npx` or `uv run` wrapper,
 * which would keep the port) before exiting with the server's code. Toolbus's SIGTERM to the group
 * reaches the server, and the shell's trap ends the watcher. (The watcher ignores SIGTERM so a stop's
 * group signal cannot end it before its job; the shell's trap is a handler, not `''`, so the server is
 * not started with SIGTERM ignored; `wait` is repeated because a trapped signal interrupts it.)
 */
const KEEPER = [
  '"$@" 3<&- &',
  "srv=$!",
  "(trap '' TERM; read _ <&3; kill -TERM $srv 2>/dev/null; sleep 3; kill -KILL -$$ 2>/dev/null) </dev/null >/dev/null 2>&1 &",
  "watch=$!",
  "exec 3<&-",
  "trap 'kill -KILL $watch 2>/dev/null; kill -TERM $srv 2>/dev/null' TERM INT HUP",
  "wait $srv; code=$?",
  "while kill -0 $srv 2>/dev/null; do wait $srv; code=$?; done",
  "kill -KILL $watch 2>/dev/null",
  "trap '' TERM",
  "kill -TERM -$$ 2>/dev/null",
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
