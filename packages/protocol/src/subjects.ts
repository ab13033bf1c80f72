/**
 * NATS subjects and queue groups. Every subject toolbus uses is built here, so a typo at a call
 * site cannot invent a subject nobody listens on.
 */

/** Version prefix of every subject; a breaking wire change gets a new one. */
export const SUBJECT_PREFIX = "toolbus.v1";

/** Worker ids (`router-1a2b3c4d`) become subject tokens too. */
const WORKER_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

function workerToken(workerId: string): string {
  if (!WORKER_ID_PATTERN.test(workerId)) throw new TypeError(`invalid worker id ${JSON.stringify(workerId)}: must match ${WORKER_ID_PATTERN}`);
  return workerId;
}

/** Backend names are subject tokens: lowercase, no dots or wildcards. */
export const BACKEND_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** True when `name` can be used as a backend name (and so as a subject token). */
export function isBackendName(name: string): boolean {
  return BACKEND_NAME_PATTERN.test(name);
}

function backendToken(backend: string): string {
  if (!isBackendName(backend)) {
    throw new TypeError(`invalid backend name ${JSON.stringify(backend)}: must match ${BACKEND_NAME_PATTERN}`);
  }
  return backend;
}

export const subjects = {
  /** Tool-call requests for the router (the default entry point). */
  toolCall: (): string => `${SUBJECT_PREFIX}.tool.call`,
  /** Tool-list requests for the router. */
  toolsList: (): string => `${SUBJECT_PREFIX}.tools.list`,
  /** Tool-call requests for one backend's callers (forwarded by the router, or sent directly). */
  backendCall: (backend: string): string => `${SUBJECT_PREFIX}.backend.${backendToken(backend)}.call`,
  /** Tool-list requests for one backend's callers. */
  backendTools: (backend: string): string => `${SUBJECT_PREFIX}.backend.${backendToken(backend)}.tools`,
  /** Caller heartbeats: how the router learns which backends have a live caller. */
  callerHeartbeat: (backend: string): string => `${SUBJECT_PREFIX}.evt.caller.${backendToken(backend)}`,
  /** Wildcard for every caller heartbeat. */
  callerHeartbeatAll: (): string => `${SUBJECT_PREFIX}.evt.caller.*`,
  /** Every caller answers with its status (endpoints, breakers, load): what `toolbus status` shows. */
  callerStatus: (): string => `${SUBJECT_PREFIX}.status.callers`,
  /** A starting router asks here; every caller answers with its heartbeat at once. */
  callerDiscovery: (): string => `${SUBJECT_PREFIX}.discover.callers`,
  /**
   * A client gave up on a call (it aborted): every caller of the backend hears it (no queue group) and
   * the one holding the call cancels it at the backend. Body: CancelRequest.
   */
  cancelCall: (backend: string): string => `${SUBJECT_PREFIX}.cancel.${backendToken(backend)}`,
  /** Breaker transitions of one backend. */
  breakerEvents: (backend: string): string => `${SUBJECT_PREFIX}.evt.breaker.${backendToken(backend)}`,
  /** Health of one backend's endpoints: every change, and a periodic heartbeat (HealthEvent). */
  healthEvents: (backend: string): string => `${SUBJECT_PREFIX}.evt.health.${backendToken(backend)}`,
  /** Wildcard for every backend's health events. */
  healthEventsAll: (): string => `${SUBJECT_PREFIX}.evt.health.*`,
  /** A caller's report on the stdio children it owns (the prober never starts a copy of one). */
  healthReport: (backend: string): string => `${SUBJECT_PREFIX}.health.report.${backendToken(backend)}`,
  /** Wildcard for every caller's reports. */
  healthReportAll: (): string => `${SUBJECT_PREFIX}.health.report.*`,
  /** An HTTP endpoint's server found on another port (EndpointMoved). */
  endpointEvents: (backend: string): string => `${SUBJECT_PREFIX}.evt.endpoint.${backendToken(backend)}`,
  /** The current health table (the health prober answers). */
  healthGet: (): string => `${SUBJECT_PREFIX}.health.get`,
  /**
   * A backend said something that makes cached results stale (its tools or a resource changed) or its
   * server restarted: published by its callers (BackendChanged); the cache drops the backend's entries.
   */
  backendChanged: (backend: string): string => `${SUBJECT_PREFIX}.evt.changed.${backendToken(backend)}`,
  /** Wildcard for every backend's changes. */
  backendChangedAll: (): string => `${SUBJECT_PREFIX}.evt.changed.*`,
  /** Cacheable tool calls the router hands to the cache worker (a hit is answered there, a miss goes on to the caller). */
  cacheLookup: (): string => `${SUBJECT_PREFIX}.cache.lookup`,
  /** A caller's result to store (CacheSetHead, a newline, the result's JSON); fire and forget. */
  cacheSet: (): string => `${SUBJECT_PREFIX}.cache.set`,
  /** Request: drop a backend's (or one tool's) entries (CacheInvalidateRequest). */
  cacheInvalidate: (): string => `${SUBJECT_PREFIX}.cache.invalidate`,
  /** Every cache replica drops these entries from its memory (CacheInvalidated); no queue group. */
  cacheInvalidated: (): string => `${SUBJECT_PREFIX}.evt.cache.invalidated`,
  /** Cache replicas' heartbeats (CacheHeartbeat): the router hands calls to the cache only while one is alive. */
  cacheHeartbeat: (): string => `${SUBJECT_PREFIX}.evt.cache.heartbeat`,
  /** A starting router asks here; every cache replica answers with its heartbeat at once. */
  cacheDiscovery: (): string => `${SUBJECT_PREFIX}.discover.caches`,
  /** Every cache replica answers with its counters (CacheStatus): what `toolbus status` shows. */
  cacheStatus: (): string => `${SUBJECT_PREFIX}.status.caches`,
  /** LLM chat requests for the router (LlmChatRequest): it picks the backend by name or model and adds the fallbacks. */
  llmChat: (): string => `${SUBJECT_PREFIX}.llm.chat`,
  /** LLM chat requests for one LLM backend's callers (forwarded by the router, by a caller falling back, or sent directly). */
  backendChat: (backend: string): string => `${SUBJECT_PREFIX}.backend.${backendToken(backend)}.chat`,
  /**
   * A client gave up on a chat (aborted, or stopped reading a stream): every LLM caller hears it (no queue
   * group; through the router the client does not know which backend serves it) and the one holding it
   * closes the upstream request. Body: CancelRequest.
   */
  llmCancel: (): string => `${SUBJECT_PREFIX}.llm.cancel`,
  /**
   * What one LLM caller replica charged to its backend's rate limits (LlmUsageShare); every replica of
   * the backend's caller charges its own buckets with it, so the limits hold across replicas.
   */
  llmUsage: (backend: string): string => `${SUBJECT_PREFIX}.llm.usage.${backendToken(backend)}`,
  /**
   * MCP requests other than tools (resources, prompts) for one backend's callers, passed to the backend
   * as they are (McpForwardRequest).
   */
  backendMcp: (backend: string): string => `${SUBJECT_PREFIX}.backend.${backendToken(backend)}.mcp`,
  /** An MCP client cancelled a request at some gateway replica: every replica hears it (GatewayCancel), no queue group. */
  gatewayCancel: (): string => `${SUBJECT_PREFIX}.gateway.cancel`,
  /** Where a cache replica acknowledges, in batches, the calls one router handed it (their tickets). */
  cacheAck: (routerId: string): string => `${SUBJECT_PREFIX}.cache.ack.${workerToken(routerId)}`,
} as const;

/** JetStream KV buckets: shared, durable state that a late joiner reads at once. */
export const kvBuckets = {
  /** The latest HealthEvent per endpoint, key `<backend>.<n>` (n: the endpoint's index). */
  health: "toolbus_health",
  /** Which health-prober replica probes which backend: key `<backend>`, value the prober's id; entries expire. */
  healthLeases: "toolbus_health_leases",
  /** Where an HTTP endpoint moved (EndpointMoved), key `<backend>.<n>`: a caller that starts later uses it. */
  endpoints: "toolbus_endpoints",
  /** Cached tool results shared by every cache replica, key from cacheKey; the bucket's TTL bounds every entry. */
  cache: "toolbus_cache",
  /** The MCP front door's sessions, key the session id: any gateway replica accepts a session another issued. */
  gatewaySessions: "toolbus_gateway_sessions",
} as const;

/** Queue groups: every replica of a worker joins the same group, so replicas share the load. */
export const queueGroups = {
  router: (): string => "router",
  caller: (backend: string): string => `caller.${backendToken(backend)}`,
  healthProber: (): string => "health-prober",
  cache: (): string => "cache",
} as const;
