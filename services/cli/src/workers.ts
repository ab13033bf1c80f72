import { isLlmBackend, type ToolbusConfig } from "@toolbus/config";
import { newWorkerId, type Worker, type WorkerDeps } from "@toolbus/runtime";

// Each worker's package is loaded when that worker starts, not when the command does: a router pod
// never loads the MCP SDK or undici, and `toolbus up` has its router serving while the rest loads.

export const WORKER_NAMES = ["router", "caller", "cache", "health-prober", "chat-log-writer", "gateway"] as const;
export type WorkerName = (typeof WORKER_NAMES)[number];

/** Start a router. */
export async function router(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { startRouter } = await import("@toolbus/router");
  return startRouter(
    { ...deps, workerId: newWorkerId("router") },
    {
      backends: Object.keys(config.backends),
      limits: config.limits,
      caching: { settings: config.cache, backends: config.backends },
      llm: Object.values(config.backends).filter(isLlmBackend),
      modelFallbacks: config.llm.fallbacks,
    },
  );
}

/** Start the caller of one configured backend. */
export async function caller(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig, backend: string): Promise<Worker> {
  const backendConfig = config.backends[backend];
  if (!backendConfig)
    throw new Error(`backend "${backend}" is not in the configuration (${config.source}); configured: ${Object.keys(config.backends).join(", ") || "none"}`);
  const { startCaller, startLlmCaller } = await import("@toolbus/caller");
  if (isLlmBackend(backendConfig))
    return startLlmCaller(
      { ...deps, workerId: newWorkerId(`caller-${backend}`) },
      { backend: backendConfig, limits: config.limits, heartbeatMs: config.heartbeatMs, chatLog: config.chatLog },
    );
  return startCaller(
    { ...deps, workerId: newWorkerId(`caller-${backend}`) },
    { backend: backendConfig, limits: config.limits, heartbeatMs: config.heartbeatMs, cache: config.cache, chatLog: config.chatLog },
  );
}

/** Start a health prober (it probes every network backend of the config). */
export async function healthProber(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { startHealthProber } = await import("@toolbus/health-prober");
  return startHealthProber(
    { ...deps, workerId: newWorkerId("health-prober") },
    { backends: Object.values(config.backends), heartbeatMs: config.heartbeatMs * 5 },
  );
}

/** Start a cache worker (L1 in memory, L2 shared through NATS KV). */
export async function cache(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { startCache } = await import("@toolbus/cache");
  return startCache({ ...deps, workerId: newWorkerId("cache") }, { config, heartbeatMs: config.heartbeatMs });
}

/** Start a chat-log writer (stream TOOLBUS_CHAT → one JSONL file per conversation). */
export async function chatLogWriter(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { startChatLogWriter } = await import("@toolbus/chat-log-writer");
  return startChatLogWriter({ ...deps, workerId: newWorkerId("chat-log-writer") }, { chatLog: config.chatLog });
}

/** Start the MCP front door over streamable HTTP. */
export async function gateway(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { startGateway } = await import("@toolbus/gateway");
  return startGateway(
    { ...deps, workerId: newWorkerId("gateway") },
    { config: config.gateway, caching: { settings: config.cache, backends: config.backends } },
  );
}

/** The MCP front door over this process's stdin and stdout (`toolbus gateway --stdio`). */
export async function gatewayStdio(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  const { runStdioGateway } = await import("@toolbus/gateway");
  return runStdioGateway(
    { ...deps, workerId: newWorkerId("gateway") },
    { config: config.gateway, caching: { settings: config.cache, backends: config.backends } },
  );
}

/** Start the worker `name` (`toolbus worker <name>`). */
export async function worker(name: WorkerName, deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig, backend?: string): Promise<Worker> {
  if (name === "router") return router(deps, config);
  if (name === "health-prober") return healthProber(deps, config);
  if (name === "cache") return cache(deps, config);
  if (name === "chat-log-writer") return chatLogWriter(deps, config);
  if (name === "gateway") return gateway(deps, config);
  return caller(deps, config, backend!);
}

/**
 * Every worker for one process (`toolbus up`): the router first, so on stop it drains before the
 * workers it forwards to; then the cache (unless caching is off), which forwards misses to the callers;
 * then a caller per backend; then the health prober.
 */
export async function allWorkers(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker[]> {
  const workers: Worker[] = [];
  try {
    workers.push(await router(deps, config));
    if (config.cache.enabled) workers.push(await cache(deps, config));
    for (const name of Object.keys(config.backends)) workers.push(await caller(deps, config, name));
    // Last: on stop it goes after the callers, so their breakers hear its events to the end.
    workers.push(await healthProber(deps, config));
    if (config.chatLog.enabled) workers.push(await chatLogWriter(deps, config));
    // Started last (it serves what the others provide), stopped first (no new MCP requests while the
    // calls it has running finish through the router and callers).
    if (config.gateway.enabled) workers.unshift(await gateway(deps, config));
  } catch (err) {
    // One failed to start: stop the ones that did, so no child process or subscription is left behind.
    await Promise.allSettled(workers.map((w) => w.stop(0)));
    throw err;
  }
  return workers;
}
