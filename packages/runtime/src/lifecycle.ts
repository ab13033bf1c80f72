import { randomUUID } from "node:crypto";
import type { NatsConnection } from "nats";
import { LocalRoutes } from "@toolbus/client";
import type { ToolbusConfig } from "@toolbus/config";
import { startAdminServer, type AdminServer } from "./admin.js";
import type { Logger } from "./logger.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { connectNats } from "./nats.js";

/** What a worker is given by the process that runs it. */
export interface WorkerDeps {
  readonly nc: NatsConnection;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Unique per worker instance; shows in logs, heartbeats and `$SRV.INFO`. */
  readonly workerId: string;
  /** The subjects served by this process's workers, for requests that need not leave it (see LocalRoutes). */
  readonly local?: LocalRoutes;
  /** Replicas of the streams and KV buckets a worker creates (`nats.replicas`): 3 on a three-node cluster. */
  readonly streamReplicas?: number;
}

/** A running worker. `stop()` drains its subscriptions, waits for in-flight work (bounded), then closes what it owns. */
export interface Worker {
  readonly name: string;
  /** Reasons this worker is not ready to serve; empty when it is. */
  notReady(): string[];
  stop(graceMs?: number): Promise<void>;
  readonly stopped: Promise<void>;
}

/**
 * A worker's `stop` and `stopped`: `stop` runs its steps once however often it is called (every caller
 * gets the same promise), and `stopped` resolves once they have finished.
 */
export function stopOnce(steps: (graceMs?: number) => Promise<void>): Pick<Worker, "stop" | "stopped"> {
  let running: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  return { stop: (graceMs) => (running ??= steps(graceMs).then(resolveStopped)), stopped };
}

/** Counts requests in flight so a stop can wait for them. */
export class InFlight {
  #count = 0;
  #waiters: Array<() => void> = [];

  get count(): number {
    return this.#count;
  }

  /** Track a piece of work until it settles. */
  track(work: Promise<unknown>): void {
    this.#count++;
    const done = (): void => {
      this.#count--;
      if (this.#count === 0) for (const wake of this.#waiters.splice(0)) wake();
    };
    // then(done, done), not finally(): a rejection of `work` is the owner's to handle, and must not
    // resurface here as an unhandled rejection that takes the process down.
    work.then(done, done);
  }

  /** Resolves true when nothing is in flight, or false when `timeoutMs` passes first. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.#count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

/** A fresh worker id: name plus a short random suffix. */
export function newWorkerId(name: string): string {
  return `${name}-${randomUUID().slice(0, 8)}`;
}

export interface RunWorkersOptions {
  /** Process name (NATS connection name, log name). */
  name: string;
  config: ToolbusConfig;
  logger: Logger;
  /** Start the workers, in order; they are stopped in the same order (front of the path first). */
  start: (deps: Omit<WorkerDeps, "workerId">) => Promise<Worker[]>;
}

/** A process running workers; `stop()` is what SIGTERM triggers. */
export interface RunningProcess {
  readonly workers: readonly Worker[];
  readonly adminPort: number | undefined;
  readonly nc: NatsConnection;
  stop(): Promise<void>;
  readonly stopped: Promise<void>;
}

/**
 * Connect to NATS, start the admin server and the workers. Stopping drains the workers in order (so a
 * router stops taking calls before the callers it forwards to), waits up to the grace period for
 * in-flight calls, closes backends, then drains the NATS connection.
 */
export async function runWorkers(options: RunWorkersOptions): Promise<RunningProcess> {
  const { config, logger } = options;
  const nc = await connectNats(config.nats, { name: options.name, logger });
  const metrics = createMetrics();
  let workers: Worker[] = [];
  let admin: AdminServer | undefined;
  try {
    workers = await options.start({ nc, logger, metrics, local: new LocalRoutes(), streamReplicas: config.nats.replicas });
    if (config.admin.port >= 0) {
      admin = await startAdminServer({
        port: config.admin.port,
        host: config.admin.host,
        registry: metrics.registry,
        notReady: () => [...(nc.isClosed() ? ["NATS connection closed"] : []), ...workers.flatMap((w) => w.notReady())],
      });
      logger.info({ port: admin.port, host: config.admin.host }, "admin server listening (/healthz, /readyz, /metrics)");
    }
  } catch (err) {
    await Promise.allSettled(workers.map((w) => w.stop(0)));
    await nc.close();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const started = Date.now();
      logger.info({ graceMs: config.shutdownGraceMs }, "stopping: draining subscriptions and finishing in-flight calls");
      for (const worker of workers) {
        const left = Math.max(0, config.shutdownGraceMs - (Date.now() - started));
        try {
          await worker.stop(left);
        } catch (err) {
          logger.error({ err, worker: worker.name }, "worker did not stop cleanly");
        }
      }
      await admin?.close();
      if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
      logger.info({ ms: Date.now() - started }, "stopped");
    })();
    return stopping;
  };
  const stopped = nc.closed().then(() => undefined);
  return { workers, adminPort: admin?.port, nc, stop, stopped };
}

/**
 * Stop the process on SIGTERM/SIGINT and exit 0 once everything is drained (1 if stopping failed).
 * A second signal exits at once.
 */
export function exitOnSignals(proc: { stop(): Promise<void> }, logger: Logger, exit: (code: number) => void = (c) => process.exit(c)): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      logger.warn({ signal }, "second signal: exiting now");
      exit(1);
      return;
    }
    signalled = true;
    logger.info({ signal }, "signal received");
    proc.stop().then(
      () => exit(0),
      (err: unknown) => {
        logger.error({ err }, "stop failed");
        exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
