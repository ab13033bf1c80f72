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
  /** Cache lookups by how they ended: `l1`, `l2` (hits by tier) or `miss`. */
  readonly cacheLookups: Counter<"tier">;
  /** Results offered to the cache, by outcome: `stored`, `too_large`, `stale` (an invalidation came after the call started), `failed`. */
  readonly cacheStores: Counter<"outcome">;
  /** L1 entries dropped to make room. */
  readonly cacheEvictions: Counter;
  /** What the L1 tier holds (set at every heartbeat). */
  readonly cacheBytes: Gauge;
  readonly cacheEntries: Gauge;
  /** Calls that joined an identical call already in flight instead of calling the backend. */
  readonly singleFlightJoins: Counter<"backend">;
  /** The router's cacheable calls: `handed` to the cache, `rescued` (the cache did not take them in time), `bypassed` (no cache alive). */
  readonly cacheHandoffs: Counter<"outcome">;
  /** Chat events written to files (fsynced), batches written, and how long each batch's slowest fsync took. */
  readonly chatEventsWritten: Counter;
  readonly chatBatches: Counter;
  readonly chatFsyncSeconds: Histogram;
  /** Chat events in the stream not yet written (or written and not yet acknowledged), for this writer's partitions. */
  readonly chatPending: Gauge;
  /** Chat events delivered again (after a crash or a lost ack), and those of them already in a file, not written twice. */
  readonly chatRedeliveries: Counter;
  readonly chatDuplicatesDropped: Counter;
  /** Events sent to the dead-letter subject, by reason. */
  readonly chatDeadLetters: Counter<"reason">;
  /** Failed writes of a batch (it is retried), by error code (ENOSPC, EACCES, ...). */
  readonly chatWriteErrors: Counter<"code">;
  /** Chat events a caller could not publish (after its retries) and dropped. */
  readonly chatEventsDropped: Counter;
  /**
   * LLM calls, under the OpenTelemetry GenAI names (dots become underscores in Prometheus): tokens used
   * by type (`input`, `output`), the whole operation's duration by outcome (`error_type` empty when it
   * succeeded), time to the first token and per output token of streams.
   */
  readonly genAiTokenUsage: Histogram<"gen_ai_provider_name" | "gen_ai_request_model" | "gen_ai_token_type" | "backend">;
  readonly genAiOperationDuration: Histogram<"gen_ai_provider_name" | "gen_ai_request_model" | "backend" | "error_type">;
  readonly genAiTimeToFirstToken: Histogram<"gen_ai_provider_name" | "gen_ai_request_model" | "backend">;
  readonly genAiTimePerOutputToken: Histogram<"gen_ai_provider_name" | "gen_ai_request_model" | "backend">;
  /** The MCP front door: requests by MCP method and outcome (`ok`, a toolbus code, or an HTTP refusal), their duration, open connections. */
  readonly gatewayRequests: Counter<"method" | "outcome">;
  readonly gatewayDuration: Histogram<"method" | "outcome">;
  readonly gatewayConnections: Gauge<"kind">;
  /** Backends left out of the gateway's tool list because they are down (fail-open: the rest is served). */
  readonly gatewayBackendsLeftOut: Gauge;
  /** Each endpoint's circuit breaker, as its caller holds it: 0 closed, 1 half-open, 2 open. */
  readonly breakerState: Gauge<"backend" | "endpoint">;
  /** A caller's time from receipt to reply, per tool (a tool the backend does not list counts as `other`). */
  readonly toolDuration: Histogram<"backend" | "tool">;
}

/** The value of `toolbus_breaker_state` for each breaker state. */
export const BREAKER_STATE_VALUE = { closed: 0, "half-open": 1, open: 2 } as const;

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
    cacheLookups: new Counter({
      name: "toolbus_cache_lookups_total",
      help: "Cache lookups: l1 and l2 hits, and misses",
      labelNames: ["tier"],
      registers: [registry],
    }),
    cacheStores: new Counter({
      name: "toolbus_cache_stores_total",
      help: "Results offered to the cache, by outcome",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    cacheEvictions: new Counter({ name: "toolbus_cache_evictions_total", help: "L1 entries dropped to make room", registers: [registry] }),
    cacheBytes: new Gauge({ name: "toolbus_cache_bytes", help: "Bytes held by the L1 tier", registers: [registry] }),
    cacheEntries: new Gauge({ name: "toolbus_cache_entries", help: "Entries held by the L1 tier", registers: [registry] }),
    gatewayRequests: new Counter({
      name: "toolbus_gateway_requests_total",
      help: "MCP requests to the front door by method and outcome",
      labelNames: ["method", "outcome"],
      registers: [registry],
    }),
    gatewayDuration: new Histogram({
      name: "toolbus_gateway_request_duration_seconds",
      help: "MCP requests to the front door, from receipt to answer",
      labelNames: ["method", "outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
      registers: [registry],
    }),
    gatewayConnections: new Gauge({
      name: "toolbus_gateway_connections",
      help: "Open HTTP connections and event streams of the front door",
      labelNames: ["kind"],
      registers: [registry],
    }),
    breakerState: new Gauge({
      name: "toolbus_breaker_state",
      help: "Circuit breaker of each endpoint: 0 closed, 1 half-open, 2 open",
      labelNames: ["backend", "endpoint"],
      registers: [registry],
    }),
    toolDuration: new Histogram({
      name: "toolbus_tool_call_duration_seconds",
      help: "Caller: time from receipt to reply, per tool (tools the backend does not list count as other)",
      labelNames: ["backend", "tool"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    gatewayBackendsLeftOut: new Gauge({
      name: "toolbus_gateway_backends_left_out",
      help: "Backends left out of the front door's tool list because they are down",
      registers: [registry],
    }),
    singleFlightJoins: new Counter({
      name: "toolbus_single_flight_joins_total",
      help: "Calls that shared an identical call already in flight",
      labelNames: ["backend"],
      registers: [registry],
    }),
    chatEventsWritten: new Counter({ name: "toolbus_chat_events_written_total", help: "Chat events written to files and fsynced", registers: [registry] }),
    chatBatches: new Counter({ name: "toolbus_chat_batches_total", help: "Batches of chat events written", registers: [registry] }),
    chatFsyncSeconds: new Histogram({
      name: "toolbus_chat_fsync_seconds",
      help: "The slowest fsync of each batch",
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    chatPending: new Gauge({
      name: "toolbus_chat_pending",
      help: "Chat events not yet written or acknowledged (this writer's partitions)",
      registers: [registry],
    }),
    chatRedeliveries: new Counter({ name: "toolbus_chat_redeliveries_total", help: "Chat events delivered again", registers: [registry] }),
    chatDuplicatesDropped: new Counter({
      name: "toolbus_chat_duplicates_dropped_total",
      help: "Chat events already in a file, not written twice",
      registers: [registry],
    }),
    chatDeadLetters: new Counter({
      name: "toolbus_chat_dead_letters_total",
      help: "Chat events sent to the dead-letter subject",
      labelNames: ["reason"],
      registers: [registry],
    }),
    chatWriteErrors: new Counter({
      name: "toolbus_chat_write_errors_total",
      help: "Failed writes of a batch of chat events",
      labelNames: ["code"],
      registers: [registry],
    }),
    chatEventsDropped: new Counter({
      name: "toolbus_chat_events_dropped_total",
      help: "Chat events a caller dropped after its retries",
      registers: [registry],
    }),
    genAiTokenUsage: new Histogram({
      name: "gen_ai_client_token_usage",
      help: "Tokens used per LLM call, by type (input, output)",
      labelNames: ["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type", "backend"],
      // The GenAI semantic conventions' advised buckets.
      buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864],
      registers: [registry],
    }),
    genAiOperationDuration: new Histogram({
      name: "gen_ai_client_operation_duration_seconds",
      help: "Duration of LLM calls, by outcome (error_type empty on success)",
      labelNames: ["gen_ai_provider_name", "gen_ai_request_model", "backend", "error_type"],
      buckets: [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92],
      registers: [registry],
    }),
    genAiTimeToFirstToken: new Histogram({
      name: "gen_ai_server_time_to_first_token_seconds",
      help: "Time from the request to the first token of a streamed LLM answer",
      labelNames: ["gen_ai_provider_name", "gen_ai_request_model", "backend"],
      buckets: [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
      registers: [registry],
    }),
    genAiTimePerOutputToken: new Histogram({
      name: "gen_ai_server_time_per_output_token_seconds",
      help: "Time per output token after the first, of streamed LLM answers",
      labelNames: ["gen_ai_provider_name", "gen_ai_request_model", "backend"],
      buckets: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5],
      registers: [registry],
    }),
    cacheHandoffs: new Counter({
      name: "toolbus_cache_handoffs_total",
      help: "Cacheable calls at the router: handed to the cache, rescued from it, or bypassing it",
      labelNames: ["outcome"],
      registers: [registry],
    }),
  };
}
