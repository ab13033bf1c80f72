import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics of one process; every worker in it records into the same registry. */
export interface Metrics {
  readonly registry: Registry;
  /** Requests handled, by worker, backend and outcome (`ok` or an error code). */
  readonly requests: Counter<"worker" | "backend" | "outcome">;
  /** Time from receipt to reply (or forward), in seconds, by outcome: how fast rejections are, too. */
  readonly duration: Histogram<"worker" | "backend" | "outcome">;
  /** The health prober's view of each endpoint: 0 unknown, 1 healthy, 2 degraded, 3 unhealthy. */
  readonly healthState: Gauge<"backend" | "endpoint">;
  /** Probe round trips that succeeded, in seconds. */
  readonly probeDuration: Histogram<"backend" | "endpoint">;
  /** Probes that failed. */
  readonly probeFailures: Counter<"backend" | "endpoint">;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({
      name: "toolbus_requests_total",
      help: "Requests handled, by worker, backend and outcome",
      labelNames: ["worker", "backend", "outcome"],
      registers: [registry],
    }),
    duration: new Histogram({
      name: "toolbus_request_duration_seconds",
      help: "Time from receipt to reply or forward",
      labelNames: ["worker", "backend", "outcome"],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    healthState: new Gauge({
      name: "toolbus_health_state",
      help: "Health of each endpoint as the prober sees it: 0 unknown, 1 healthy, 2 degraded, 3 unhealthy, 4 lost",
      labelNames: ["backend", "endpoint"],
      registers: [registry],
    }),
    probeDuration: new Histogram({
      name: "toolbus_health_probe_duration_seconds",
      help: "Round trip of successful health probes",
      labelNames: ["backend", "endpoint"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    probeFailures: new Counter({
      name: "toolbus_health_probe_failures_total",
      help: "Health probes that failed",
      labelNames: ["backend", "endpoint"],
      registers: [registry],
    }),
  };
}
