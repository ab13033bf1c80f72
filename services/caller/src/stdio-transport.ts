import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { signalGroup, trackChild } from "./children.js";
import { isJsonRpcMessage, malformedAnswer, tooLargeAnswer, within } from "@toolbus/mcp-http";

export interface ChildTransportOptions {
  command: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string;
  /** Each line the child writes to stderr. */
  onStderr: (line: string) => void;
  /** The longest message (line) read from the child; a longer one is skipped, its request answered. */
  maxLineBytes: number;
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
      const lines = new LineReader(this.options.maxLineBytes);
      child.stdout.on("data", (chunk: Buffer) => {
        lines.push(chunk, (line) => {
          if (line.tooLarge) {
            // A result we cannot carry: answer its request now, as the server would have, and keep the
            // child (it is not misbehaving, only verbose).
            if (line.id !== undefined) this.onmessage?.(tooLargeAnswer(line.id, line.bytes, this.options.maxLineBytes));
            else this.onerror?.(new Error(`skipped a ${line.bytes}-byte line from the server (over ${this.options.maxLineBytes} bytes) naming no request`));
            return;
          }
          if (line.text === "") return;
          let message: unknown;
          try {
            message = JSON.parse(line.text);
          } catch (err) {
            // A line that is not a JSON-RPC message is reported and skipped; the next may be fine.
            this.onerror?.(err as Error);
            return;
          }
          if (isJsonRpcMessage(message)) return this.onmessage?.(message);
          // An answer to a request that is neither a result nor an error ends that request now.
          const answer = malformedAnswer(message);
          if (answer) this.onmessage?.(answer);
          else this.onerror?.(new Error(`skipped a line from the server that is not a JSON-RPC message: ${line.text.slice(0, 200)}`));
        });
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
    child.stdin.end();
    if (await within(2_000, closed)) return;
    signalGroup(child, "SIGTERM");
    if (await within(2_000, closed)) return;
    signalGroup(child, "SIGKILL");
    await closed;
  }
}

export type Line = { tooLarge: false; text: string } | { tooLarge: true; bytes: number; id: string | number | undefined };

/** The JSON-RPC id of a message from its first or last bytes (the rest of it was not kept). */
function idOf(head: string, tail: string): string | number | undefined {
  // A request from the server (sampling, elicitation) has an id of the server's, not one of ours.
  if (/"method"\s*:/.test(head)) return undefined;
  const match =
    /^\s*\{(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")/.exec(head) ?? /"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*\}\s*$/.exec(tail);
  if (!match) return undefined;
  return match[1]!.startsWith('"') ? (JSON.parse(match[1]!) as string) : Number(match[1]);
}

/**
 * Splits stdout into lines (one JSON-RPC message each). A line longer than `max` is not kept: only its
 * first and last bytes, enough to find the request it answers.
 */
export class LineReader {
  #chunks: Buffer[] = [];
  #size = 0;
  /** In a line already over the limit: its size so far, its head and its tail. */
  #over: { bytes: number; head: string; tail: Buffer } | undefined;

  constructor(private readonly max: number) {}

  /** Feed a chunk of stdout; `onLine` gets each line it completes. */
  push(chunk: Buffer, onLine: (line: Line) => void): void {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      // The common case, a whole line within one chunk: decoded in place, nothing copied.
      if (this.#size === 0 && !this.#over && nl - start <= this.max) onLine({ tooLarge: false, text: chunk.toString("utf8", start, nl).replace(/\r$/, "") });
      else onLine(this.#end(chunk.subarray(start, nl)));
      start = nl + 1;
    }
    if (start < chunk.length) this.#add(chunk.subarray(start));
  }

  #add(part: Buffer): void {
    if (this.#over) {
      this.#over.bytes += part.length;
      // Only the last bytes matter: no copy of a whole chunk, and nothing that keeps one alive.
      this.#over.tail = Buffer.from(part.length >= 256 ? part.subarray(-256) : Buffer.concat([this.#over.tail, part]).subarray(-256));
      return;
    }
    this.#chunks.push(part);
    this.#size += part.length;
    if (this.#size > this.max) {
      const all = Buffer.concat(this.#chunks);
      this.#over = { bytes: all.length, head: all.toString("utf8", 0, 256), tail: Buffer.from(all.subarray(-256)) };
      this.#chunks = [];
      this.#size = 0;
    }
  }

  #end(last: Buffer): Line {
    this.#add(last);
    const over = this.#over;
    if (over) {
      this.#over = undefined;
      return { tooLarge: true, bytes: over.bytes, id: idOf(over.head, over.tail.toString("utf8")) };
    }
    const text = Buffer.concat(this.#chunks).toString("utf8").replace(/\r$/, "");
    this.#chunks = [];
    this.#size = 0;
    return { tooLarge: false, text };
  }
}
