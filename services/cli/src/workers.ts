import { startCaller } from "@toolbus/caller";
import type { ToolbusConfig } from "@toolbus/config";
import { newWorkerId, type Worker, type WorkerDeps } from "@toolbus/runtime";
import { startRouter } from "@toolbus/router";

export const WORKER_NAMES = ["router", "caller"] as const;
export type WorkerName = (typeof WORKER_NAMES)[number];

/** Start a router. */
export function router(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker> {
  return startRouter({ ...deps, workerId: newWorkerId("router") }, { backends: Object.keys(config.backends), limits: config.limits });
}

/** Start the caller of one configured backend. */
export function caller(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig, backend: string): Promise<Worker> {
  const backendConfig = config.backends[backend];
  if (!backendConfig)
    throw new Error(`backend "${backend}" is not in the configuration (${config.source}); configured: ${Object.keys(config.backends).join(", ") || "none"}`);
  return startCaller(
    { ...deps, workerId: newWorkerId(`caller-${backend}`) },
    { backend: backendConfig, limits: config.limits, heartbeatMs: config.heartbeatMs },
  );
}

/**
 * Every worker for one process (`toolbus up`): the router first, so on stop it drains before the
 * callers it forwards to; then a caller per backend.
 */
export async function allWorkers(deps: Omit<WorkerDeps, "workerId">, config: ToolbusConfig): Promise<Worker[]> {
  const workers: Worker[] = [];
  try {
    workers.push(await router(deps, config));
    for (const name of Object.keys(config.backends)) workers.push(await caller(deps, config, name));
  } catch (err) {
    // One failed to start: stop the ones that did, so no child process or subscription is left behind.
    await Promise.allSettled(workers.map((w) => w.stop(0)));
    throw err;
  }
  return workers;
}
