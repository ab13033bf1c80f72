import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { signalGroup, trackChild } from "./children.js";

export interface ChildTransportOptions {
  command: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string;
  /** Each line the child writes to stderr. */
  onStderr: (line: string) => void;
}

/**
 * MCP over the stdio of a child process, like the SDK's StdioClientTransport, with one difference that
 * matters to a gateway: the child runs in its own process group. A Ctrl-C in the terminal (SIGINT to
 * the whole foreground group) then reaches only toolbus, which finishes the calls in flight and closes
 * the children itself, instead of the children dying under those calls.
 */
export class ChildProcessTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  #child: ChildProcessWithoutNullStreams | undefined;
  readonly #buffer = new ReadBuffer();

  constructor(private readonly options: ChildTransportOptions) {}

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  start(): Promise<void> {
    if (this.#child) throw new Error("ChildProcessTransport already started");
    return new Promise((resolve, reject) => {
      const child = spawn(this.options.command, [...this.options.args], {
        env: { ...getDefaultEnvironment(), ...this.options.env },
        cwd: this.options.cwd,
        stdio: ["pipe", "pipe", "pipe"],
        detached: true,
        windowsHide: true,
      });
      this.#child = child;
      trackChild(child);
      child.once("error", (err) => {
        reject(err);
        this.onerror?.(err);
      });
      child.once("spawn", () => resolve());
      child.once("close", () => {
        this.#child = undefined;
        this.onclose?.();
      });
      child.stdin.on("error", (err) => this.onerror?.(err));
      child.stdout.on("data", (chunk: Buffer) => {
        try {
          this.#buffer.append(chunk);
        } catch (err) {
          // Over the buffer limit without a newline: the child is not speaking MCP; give up on it.
          this.onerror?.(err as Error);
          void this.close();
          return;
        }
        for (;;) {
          let message: JSONRPCMessage | null;
          try {
            message = this.#buffer.readMessage();
          } catch (err) {
            // A line that is not a JSON-RPC message is reported and skipped; the next may be fine.
            this.onerror?.(err as Error);
            continue;
          }
          if (message === null) break;
          this.onmessage?.(message);
        }
      });
      createInterface({ input: child.stderr }).on("line", this.options.onStderr);
    });
  }

  send(message: JSONRPCMessage): Promise<void> {
    const stdin = this.#child?.stdin;
    if (!stdin) return Promise.reject(new Error("Not connected"));
    return new Promise((resolve) => {
      if (stdin.write(serializeMessage(message))) resolve();
      else stdin.once("drain", resolve);
    });
  }

  /** End stdin (a well-behaved server exits), then SIGTERM, then SIGKILL, 2 s apart. */
  async close(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    const within = (ms: number): Promise<boolean> =>
      Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    child.stdin.end();
    if (await within(2_000)) return;
    signalGroup(child, "SIGTERM");
    if (await within(2_000)) return;
    signalGroup(child, "SIGKILL");
    await closed;
  }
}
