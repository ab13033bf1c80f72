import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { FetchLike, Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode as McpErrorCode, McpError, type CallToolResult as McpCallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { LaunchConfig, McpHttpBackendConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { Agent, fetch as undiciFetch } from "undici";
import { signalGroup, trackChild } from "./children.js";
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

/** Connect-phase failures: the request cannot have reached the server. */
const NOT_CONNECTED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "UND_ERR_CONNECT_TIMEOUT"]);

/**
 * True only when nothing reached the server (refused, unresolvable, unreachable). A reset or a closed
 * socket may come after the server got the request, so those are not "never reached": a call that is
 * not safe to repeat must not be repeated because of them.
 */
function neverConnected(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } } | undefined)?.cause;
  return err instanceof TypeError && cause !== undefined && NOT_CONNECTED.has(cause.code ?? "");
}

/**
 * A streamable HTTP MCP server: one keep-alive connection pool and one MCP session, re-initialized
 * transparently when the server answers 404 (it no longer knows the session, e.g. after a restart).
 */
export class HttpEndpoint extends ClientEndpoint {
  readonly #agent: Agent;
  readonly #fetch: FetchLike;

  constructor(
    id: string,
    private readonly config: McpHttpBackendConfig,
    private readonly url: string,
    log: Logger,
    events: EndpointEvents,
  ) {
    super(id, log, config.connectTimeoutMs, events);
    // A replaced session stays open until the calls out on it are done (each gets its own 404).
    this.retireAfterMs = config.callTimeoutMs;
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
    const started = performance.now();
    try {
      return await super.callTool(name, args, options);
    } catch (err) {
      // Nothing reached the server. The session may well survive a server restart on the same port, so
      // keep it: the breaker decides when to try again, and a forgotten session answers 404 then.
      if (neverConnected(err)) throw new EndpointDownError(this.id);
      if (!(err instanceof StreamableHTTPError && err.code === 404)) throw err;
      // The server answered 404 to this very request: it forgot our session, so the call did not run.
      // Start a new session (one for all calls that hit this) and send it once more, within what is left.
      const left = options.maxTotalMs - (performance.now() - started);
      const reconnected = await Promise.race([
        this.reset(used, "MCP session expired (404)").then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), Math.max(0, left)).unref()),
      ]);
      const still = options.maxTotalMs - (performance.now() - started);
      if (!reconnected || still <= 0) throw new McpError(McpErrorCode.RequestTimeout, "the deadline passed while re-initializing the MCP session");
      if (!this.live) throw new EndpointDownError(this.id);
      return super.callTool(name, args, { ...options, timeoutMs: Math.min(options.timeoutMs, Math.floor(still)), maxTotalMs: Math.floor(still) });
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
    trackChild(child);
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
    signalGroup(child, "SIGTERM");
    const timer = setTimeout(() => signalGroup(child, "SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
  }
}
