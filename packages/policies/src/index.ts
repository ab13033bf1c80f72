export { TokenBucket } from "./rate-limit.js";
export type { Reservation } from "./rate-limit.js";
export { Bulkhead, BulkheadRejected, isBulkheadRejected } from "./bulkhead.js";
export { LatencyEstimator } from "./latency.js";
export type { LatencyOptions } from "./latency.js";
export { RetryBudget, backoffMs } from "./retry.js";
export type { RetryBudgetOptions } from "./retry.js";
export { Breaker, BreakerState, BreakerOpenError, isBreakerOpen } from "./breaker.js";
export type { BreakerOptions, BreakerTransition } from "./breaker.js";
