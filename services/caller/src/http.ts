import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { FetchLike, Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { ErrorCode as McpErrorCode, McpError, type CallToolResult as McpCallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { LaunchConfig, McpHttpBackendConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { Agent, fetch as undiciFetch } from "undici";
import { ClientEndpoint, EndpointDownError, type CallOptions, type EndpointEvents } from "./endpoint.js";

/** A fetch that keeps connections alive in `agent` and gives each request a fresh signal. */
function pooledFetch(agent: Agent): FetchLike {
  return (url, init) =>
    undiciFetch(url, {
      ...(init as Parameters<typeof undiciFetch>[1]),
      dispatcher: agent,
      // The SDK hands every request the same long-lived signal; fetch adds a listener to it per
      // request, which leaks listeners (MaxListenersExceededWarning after ~1,500 calls) and CPU.
      signal: init?.signal ? AbortSignal.any([init.signal]) : undefined,
    }) as unknown as Promise<Response>;
}

/** True for errors that mean nothing reached the server (refused, reset, DNS). */
function isConnectionError(err: unknown): boolean {
  return (
    err instanceof TypeError &&
    /fetch failed|ECONNREFUSED|ECONNRESET|other side closed|socket/i.test(`${err.message} ${String((err as { cause?: unknown }).cause)}`)
  );
}

/**
 * A streamable HTTP MCP server: one keep-alive connection pool and one MCP session, re-initialized
 * transparently when the server answers 404 (it no longer knows the session, e.g. after a restart).
 */
export class HttpEndpoint extends ClientEndpoint {
  readonly #agent: Agent;
  readonly #fetch: FetchLike;
  /** Sessions the server has forgotten; calls that were out on them are safe to send again. */
  readonly #expired = new WeakSet<Client>();

  constructor(
    id: string,
    private readonly config: McpHttpBackendConfig,
    private readonly url: string,
    log: Logger,
    events: EndpointEvents,
  ) {
    super(id, log, config.connectTimeoutMs, events);
    this.#agent = new Agent({ connections: config.connections, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });
    this.#fetch = pooledFetch(this.#agent);
  }

  protected createTransport(): Transport {
    return new StreamableHTTPClientTransport(new URL(this.url), {
      fetch: this.#fetch,
      requestInit: { headers: { ...this.config.headers } },
    });
  }

  override async callTool(name: string, args: Record<string, unknown>, options: CallOptions): Promise<McpCallToolResult> {
    const used = this.client;
    try {
      return await super.callTool(name, args, options);
    } catch (err) {
      // The server forgot our session (404), or we dropped that session because it did while this call
      // was out: either way the call never ran there. Start a new session (one for all such calls) and
      // send it once more.
      const forgotten = err instanceof StreamableHTTPError && err.code === 404;
      if (forgotten || (used !== undefined && this.#expired.has(used) && err instanceof McpError && err.code === McpErrorCode.ConnectionClosed)) {
        if (forgotten && used && !this.#expired.has(used)) {
          this.#expired.add(used);
          this.log.info({ endpoint: this.id }, "MCP session expired (404); re-initializing");
        }
        await this.reset(used);
        if (!this.live) throw new EndpointDownError(this.id);
        return super.callTool(name, args, options);
      }
      // Nothing reached the server. The session may well survive a server restart on the same port, so
      // keep it: the breaker decides when to try again, and a forgotten session answers 404 then.
      if (isConnectionError(err)) throw new EndpointDownError(this.id);
      throw err;
    }
  }

  override async close(): Promise<void> {
    // Ending the session politely (DELETE) is best effort: the server may already be gone.
    const transport = this.client?.transport as StreamableHTTPClientTransport | undefined;
    await Promise.race([transport?.terminateSession().catch(() => undefined), new Promise((r) => setTimeout(r, 500).unref())]);
    await super.close();
    await this.#agent.close().catch(() => undefined);
  }
}

/** A server process toolbus starts for an HTTP backend (`launch:` in the config). */
export class LaunchedServer {
  #child: ChildProcess | undefined;

  constructor(
    private readonly config: LaunchConfig,
    private readonly log: Logger,
    private readonly backend: string,
  ) {}

  start(): void {
    const child = spawn(this.config.command, [...this.config.args], {
      cwd: this.config.cwd,
      env: { ...getDefaultEnvironment(), ...this.config.env },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a Ctrl-C meant for toolbus does not stop it under calls in flight.
      detached: true,
    });
    this.#child = child;
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => this.log.debug({ backend: this.backend, output: line }, "launched server output"));
    }
    child.on("exit", (code, signal) => {
      if (this.#child === child) this.log.warn({ backend: this.backend, code, signal }, "launched server exited");
    });
    child.on("error", (err) => this.log.error({ backend: this.backend, err: err.message }, "could not launch server"));
    this.log.info({ backend: this.backend, pid: child.pid, command: this.config.command }, "launched HTTP backend server");
  }

  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
  }
}
