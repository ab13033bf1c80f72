import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { EVERYTHING_SERVER, FAULT_SERVER } from "./paths.js";
import { guardedFetch } from "@toolbus/mcp-http";
import { Agent } from "undici";

/** A free TCP port on 127.0.0.1 (free when asked; good enough for a test server started right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface HttpServerProcess {
  readonly url: string;
  readonly port: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function waitForOutput(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${output}`)), 15_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (pattern.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${output}`));
    });
  });
}

function handle(child: ChildProcess, port: number): HttpServerProcess {
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  };
  return { url: `http://127.0.0.1:${port}/mcp`, port, child, stop, [Symbol.asyncDispose]: stop };
}

/** The reference server over streamable HTTP on a free port. */
export async function startEverythingHttp(port?: number): Promise<HttpServerProcess> {
  const p = port ?? (await freePort());
  const child = spawn(process.execPath, [EVERYTHING_SERVER, "streamableHttp"], { env: { ...process.env, PORT: String(p) }, stdio: ["ignore", "pipe", "pipe"] });
  await waitForOutput(child, /listening on port/i, "server-everything (HTTP)");
  child.stdout?.resume();
  child.stderr?.resume();
  return handle(child, p);
}

/**
 * The fault server over streamable HTTP on a free port (or `port`). `unknownSession: 400` makes it
 * answer a session it does not know as the reference server does (400), not with the spec's 404.
 */
export async function startFaultHttp(port?: number, options: { unknownSession?: 400 | 404 } = {}): Promise<HttpServerProcess> {
  const p = port ?? (await freePort());
  const args = [FAULT_SERVER, "--http", "--port", String(p), ...(options.unknownSession === 400 ? ["--unknown-session-400"] : [])];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  await waitForOutput(child, /listening http/, "fault server (HTTP)");
  return handle(child, p);
}

/** A plain MCP SDK client: the baseline toolbus is compared against. */
export async function directStdio(args: string[]): Promise<Client & AsyncDisposable> {
  const client = new Client({ name: "direct", version: "0.0.0" });
  await client.connect(new StdioClientTransport({ command: process.execPath, args, stderr: "ignore" }));
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.close() });
}

/**
 * A plain MCP SDK client over streamable HTTP, with the per-request signal handling the caller has
 * (guardedFetch on a keep-alive pool): the SDK's own fetch adds an abort listener per request to one
 * long-lived signal, which floods MaxListenersExceededWarning and costs CPU, so a comparison with it
 * would not be fair.
 */
export async function directHttp(url: string): Promise<Client & AsyncDisposable> {
  const client = new Client({ name: "direct", version: "0.0.0" });
  const agent = new Agent({ connections: 16, keepAliveTimeout: 30_000 });
  const fetch = guardedFetch({ agent, maxResponseBytes: 64 * 1024 * 1024, onTooLarge: () => undefined });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch }));
  return Object.assign(client, {
    [Symbol.asyncDispose]: async () => {
      await client.close();
      await agent.close();
    },
  });
}

/** Backend configs for the reference server. */
export const everythingStdio = (pool = 1) => ({ kind: "mcp-stdio", command: process.execPath, args: [EVERYTHING_SERVER, "stdio"], pool });
export const faultStdio = (pool = 1) => ({ kind: "mcp-stdio", command: process.execPath, args: [FAULT_SERVER], pool });
export const httpBackend = (url: string) => ({ kind: "mcp-http", url });
