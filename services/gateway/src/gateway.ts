import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { ToolbusClient } from "@toolbus/client";
import { cacheRule, type BackendConfig, type CacheConfig, type GatewayConfig } from "@toolbus/config";
import type { ToolDescriptor } from "@toolbus/protocol";
import { stopOnce, type Logger, type Worker, type WorkerDeps } from "@toolbus/runtime";
import { Catalog } from "./catalog.js";
import { HttpFrontDoor } from "./http.js";
import { GatewayCore, listChanged } from "./mcp-server.js";
import { SessionStore } from "./sessions.js";

export interface GatewayOptions {
  config: GatewayConfig;
  /**
   * What is cacheable (as the router is told): a cacheable call goes through the router, which hands it
   * to the cache. Without it no call is cacheable, and with `route: auto` every call goes straight to
   * the backend's callers.
   */
  caching?: { settings: CacheConfig; backends: Readonly<Record<string, BackendConfig>> };
}

export interface GatewayWorker extends Worker {
  /** The port the front door listens on (the configured one, or the free one picked for port 0). */
  readonly port: number;
  readonly url: string;
}

/**
 * Whether a tools/call goes through the router. The router adds nothing to a call it would only pass
 * on to the backend's callers (they check the tool and its arguments again, and answer the client
 * directly), so with `route: auto` only a call the router would hand to the cache goes through it: the
 * architecture's one-hop path for clients that name a backend. Measured here, one hop fewer is about
 * 1.25x the calls/s and 0.17 ms less at p50 through the front door.
 */
function viaRouter(options: GatewayOptions): (backend: string, tool: string, descriptor: ToolDescriptor | undefined) => boolean {
  if (options.config.route === "router") return () => true;
  const caching = options.caching;
  if (!caching?.settings.enabled) return () => false;
  return (backend, tool, descriptor) => {
    const configured = caching.backends[backend];
    // A backend known only from its callers' heartbeats has no cache settings: the router never caches it.
    return configured !== undefined && cacheRule(caching.settings, configured, tool, descriptor) !== undefined;
  };
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** What both front doors run on: the bus client, the catalog and the core, started; `stop` undoes it. */
async function startCore(deps: WorkerDeps, options: GatewayOptions, log: Logger): Promise<{ catalog: Catalog; core: GatewayCore; stop(): Promise<void> }> {
  const { config } = options;
  // A call to a caller in this process (`toolbus up`) stays in it: no trip through the NATS server.
  const client = new ToolbusClient(deps.nc, { local: deps.local });
  const catalog = new Catalog(client, deps.nc, log, deps.metrics, config.tools);
  const core = new GatewayCore(catalog, client, deps.nc, config, log, deps.metrics, viaRouter(options));
  core.start();
  await catalog.start();
  return {
    catalog,
    core,
    stop: async () => {
      await core.stop();
      await catalog.stop();
      await client.close();
    },
  };
}

/**
 * The MCP front door over streamable HTTP (`toolbus worker gateway`, part of `toolbus up`): an MCP
 * server whose every request flows over the bus with a deadline, so any replica serves any request.
 */
export async function startGateway(deps: WorkerDeps, options: GatewayOptions): Promise<GatewayWorker> {
  const { config } = options;
  const log = deps.logger.child({ worker: "gateway", workerId: deps.workerId });
  if (config.tokens.length === 0 && !LOOPBACK.test(config.host)) {
    throw new Error(`gateway.host is ${config.host}, not a loopback address: set gateway.tokens so that not everyone who can reach it can call every tool`);
  }
  const sessions = new SessionStore(deps.nc, log, config.sessionTtlMs, deps.streamReplicas ?? 1);
  await sessions.start();
  const { core, stop } = await startCore(deps, options, log);
  let front: HttpFrontDoor;
  let port: number;
  try {
    // A token that cannot be read (its variable unset, its file missing) stops the start here.
    front = new HttpFrontDoor(config, core, sessions, log, deps.metrics);
    port = await front.listen();
  } catch (err) {
    // Leave nothing behind: no subscription, no timer.
    await stop();
    throw err;
  }
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}${config.path}`;
  log.info({ url, auth: config.tokens.length > 0 ? config.tokens.map((t) => t.name) : "none (loopback only)" }, "gateway started");
  return {
    name: "gateway",
    port,
    url,
    notReady: () => [],
    ...stopOnce(async (graceMs = 10_000) => {
      const until = Date.now() + graceMs;
      while (core.running > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      if (core.running > 0) core.abortAll("the gateway stopped before the call ended (grace period over)");
      await front.close();
      await stop();
    }),
  };
}

/**
 * The front door over this process's stdin and stdout (`toolbus gateway --stdio`), for a desktop client
 * that starts its MCP servers as commands. Logs must go to stderr: stdout carries the protocol.
 */
export async function runStdioGateway(deps: WorkerDeps, options: GatewayOptions): Promise<Worker> {
  const log = deps.logger.child({ worker: "gateway-stdio", workerId: deps.workerId });
  const { catalog, core, stop } = await startCore(deps, options, log);
  const server = core.createServer({ session: `stdio-${deps.workerId}`, allowed: () => true });
  catalog.onChange((change) => void listChanged(server, change).catch(() => undefined));
  const transport = new StdioServerTransport();
  const worker = {
    name: "gateway-stdio",
    notReady: () => [],
    ...stopOnce(async () => {
      core.abortAll("the gateway stopped");
      await server.close().catch(() => undefined);
      await stop();
    }),
  };
  // The client closing stdin ends the session, and the process with it.
  server.onclose = () => void worker.stop();
  await server.connect(transport);
  log.info({}, "gateway serving MCP on stdio");
  return worker;
}
