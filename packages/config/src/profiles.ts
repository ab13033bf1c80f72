/** Deployment profiles seed every default that depends on where toolbus runs. */
export const Profile = { local: "local", cloud: "cloud", hybrid: "hybrid" } as const;
export type Profile = (typeof Profile)[keyof typeof Profile];

/** Latency samples kept per tool for the adaptive timeout, in every profile (so `minSamples` can be checked against it). */
export const ADAPTIVE_WINDOW = 256;

export interface ProfileDefaults {
  /** Time to spawn/connect and initialize an MCP session. */
  connectTimeoutMs: number;
  /** Upper bound on one tool call when the request's budget is larger. */
  callTimeoutMs: number;
  /** Budget the CLI gives a call when no --timeout is set. */
  defaultBudgetMs: number;
  /** How often callers announce themselves to routers. */
  heartbeatMs: number;
  /** Per endpoint: opens when more than `errorPercentage` of at least `volumeThreshold` calls in `windowMs` failed. */
  breaker: { volumeThreshold: number; errorPercentage: number; windowMs: number; recoveryMs: number };
  /** Retries of safe calls: exponential backoff with full jitter, and a budget (ratio of requests, plus a reserve). */
  retry: { maxRetries: number; initialBackoffMs: number; maxBackoffMs: number; budgetRatio: number; budgetReserve: number };
  /** Per endpoint: calls in flight, and how many more may wait. */
  bulkhead: { maxConcurrent: number; maxQueue: number };
  /** Adaptive timeout: `multiplier` × the p99 of the last `window` calls of a tool, at least `minMs`, at most the call timeout. */
  adaptive: { minMs: number; multiplier: number; minSamples: number; window: number };
  /**
   * Health probes of each network endpoint: one every `intervalMs`, failed past `timeoutMs`; unhealthy
   * after `unhealthyAfter` failures in a row, healthy again after `healthyAfter` successes, degraded
   * when a probe takes longer than `degradedMs`.
   */
  health: HealthDefaults;
}

export interface HealthDefaults {
  intervalMs: number;
  timeoutMs: number;
  unhealthyAfter: number;
  healthyAfter: number;
  degradedMs: number;
}

/**
 * local: everything on one machine, so failures are detected fast.
 * cloud: backends across a network; tolerate latency and slow cold starts.
 * hybrid: local workers, some remote backends.
 */
export const PROFILE_DEFAULTS: Readonly<Record<Profile, Readonly<ProfileDefaults>>> = Object.freeze({
  local: {
    connectTimeoutMs: 5_000,
    callTimeoutMs: 30_000,
    defaultBudgetMs: 30_000,
    heartbeatMs: 1_000,
    breaker: { volumeThreshold: 3, errorPercentage: 50, windowMs: 30_000, recoveryMs: 5_000 },
    retry: { maxRetries: 2, initialBackoffMs: 50, maxBackoffMs: 1_000, budgetRatio: 0.2, budgetReserve: 5 },
    bulkhead: { maxConcurrent: 64, maxQueue: 256 },
    adaptive: { minMs: 250, multiplier: 4, minSamples: 50, window: ADAPTIVE_WINDOW },
    health: { intervalMs: 1_000, timeoutMs: 500, unhealthyAfter: 3, healthyAfter: 2, degradedMs: 250 },
  },
  cloud: {
    connectTimeoutMs: 15_000,
    callTimeoutMs: 60_000,
    defaultBudgetMs: 60_000,
    heartbeatMs: 2_000,
    breaker: { volumeThreshold: 10, errorPercentage: 50, windowMs: 60_000, recoveryMs: 30_000 },
    retry: { maxRetries: 3, initialBackoffMs: 200, maxBackoffMs: 5_000, budgetRatio: 0.2, budgetReserve: 10 },
    bulkhead: { maxConcurrent: 32, maxQueue: 128 },
    adaptive: { minMs: 2_000, multiplier: 5, minSamples: 50, window: ADAPTIVE_WINDOW },
    health: { intervalMs: 10_000, timeoutMs: 5_000, unhealthyAfter: 3, healthyAfter: 2, degradedMs: 2_000 },
  },
  hybrid: {
    connectTimeoutMs: 10_000,
    callTimeoutMs: 45_000,
    defaultBudgetMs: 45_000,
    heartbeatMs: 1_000,
    breaker: { volumeThreshold: 5, errorPercentage: 50, windowMs: 30_000, recoveryMs: 10_000 },
    retry: { maxRetries: 2, initialBackoffMs: 100, maxBackoffMs: 2_000, budgetRatio: 0.2, budgetReserve: 5 },
    bulkhead: { maxConcurrent: 48, maxQueue: 192 },
    adaptive: { minMs: 1_000, multiplier: 4, minSamples: 50, window: ADAPTIVE_WINDOW },
    health: { intervalMs: 5_000, timeoutMs: 2_000, unhealthyAfter: 3, healthyAfter: 2, degradedMs: 1_000 },
  },
} satisfies Record<Profile, ProfileDefaults>);
