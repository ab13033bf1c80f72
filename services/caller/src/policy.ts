import { setMaxListeners } from "node:events";
import type { BackendConfig } from "@toolbus/config";
import {
  Breaker,
  Bulkhead,
  LatencyEstimator,
  RetryBudget,
  TokenBucket,
  backoffMs,
  isBreakerOpen,
  isBulkheadRejected,
  type BreakerTransition,
} from "@toolbus/policies";
import {
  ErrorCode,
  errorReply,
  monotonicNow,
  type CallToolResult,
  type ErrorReply,
  type ToolCallOkReply,
  type ToolCallRequest,
  type ToolDescriptor,
  type ToolProgress,
} from "@toolbus/protocol";
import type { Endpoint } from "./endpoint.js";
import { REPLY_MARGIN_MS, leastBusy, sleep } from "./shared.js";
import { CallAbortedError, classify, faultReply, type AbortKind, type Fault, type TimeoutContext } from "@toolbus/mcp-http";

/**
 * The least time a call must have left after its rate-limit wait: more if the tool's p99 says so, and
 * at least 5% of its budget (a call scheduled to start at the last moment would only time out).
 */
const RATE_LIMIT_CALL_ALLOWANCE_MS = 50;

/** A failed attempt, with what the policies need to know about it. */
class AttemptError extends Error {
  override name = "AttemptError";
  constructor(
    override readonly cause: unknown,
    readonly fault: Fault,
    /** Counts toward the breaker and may be retried: a fault of the backend, not an impatient client's timeout or a cancel. */
    readonly counts: boolean,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

/** Whether repeating a call of `tool` cannot do harm: its annotations, unless config says otherwise. */
export function isSafeToRepeat(tool: ToolDescriptor | undefined, override: { idempotent?: boolean; readOnly?: boolean } | undefined): boolean {
  const readOnly = override?.readOnly ?? tool?.annotations?.readOnlyHint ?? false;
  const idempotent = override?.idempotent ?? tool?.annotations?.idempotentHint ?? false;
  return readOnly || idempotent;
}

export interface PolicyEvents {
  onBreaker(endpoint: Endpoint, transition: BreakerTransition): void;
}

/**
 * Every policy of one backend, composed in one place. Per attempt, cheapest rejection first:
 * deadline → breaker (choose a live endpoint whose breaker admits a call) → bulkhead → rate limit →
 * timeout (adaptive, restarted by progress, capped by the deadline); retry around them for calls that
 * are safe to repeat, within a retry budget and the deadline, on a freshly chosen endpoint.
 */
export class CallPolicy {
  readonly breakers = new Map<Endpoint, Breaker>();
  readonly bulkheads = new Map<Endpoint, Bulkhead>();
  readonly #rate: TokenBucket | undefined;
  readonly #latency: LatencyEstimator;
  readonly #budget: RetryBudget;
  #rotation = 0;

  readonly #now: () => number;
  readonly #random: () => number;

  constructor(
    private readonly backend: BackendConfig,
    private readonly endpoints: readonly Endpoint[],
    events: PolicyEvents,
    /** The monotonic clock in ms (a test's fake clock). */
    now: () => number = monotonicNow,
    /** The backoff's jitter in [0, 1): a test fixes it to check the exact spacing of retries. */
    random: () => number = Math.random,
  ) {
    this.#now = now;
    this.#random = random;
    const p = backend.policy;
    for (const endpoint of endpoints) {
      this.breakers.set(
        endpoint,
        new Breaker(
          endpoint.id,
          p.breaker,
          (err) => (err as AttemptError).counts === true,
          (t) => events.onBreaker(endpoint, t),
        ),
      );
      this.bulkheads.set(endpoint, new Bulkhead(p.bulkhead.maxConcurrent, p.bulkhead.maxQueue));
    }
    // On the same clock as the deadlines it is checked against (the bucket's own default is performance.now).
    this.#rate = p.rateLimit && new TokenBucket(p.rateLimit.ratePerSec, p.rateLimit.burst, now);
    this.#latency = new LatencyEstimator({ ...p.adaptive, maxMs: backend.callTimeoutMs, defaultMs: backend.callTimeoutMs });
    this.#budget = new RetryBudget({ ratio: p.retry.budgetRatio, reserve: p.retry.budgetReserve });
  }

  /** Stop the breakers' timers. */
  close(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
  }

  /**
   * The least-loaded live endpoint whose breaker admits a call, preferring ones not tried yet for this
   * request; ties go round-robin so a pool shares sequential load too.
   */
  #pick(tried: ReadonlySet<Endpoint> | undefined): Endpoint | undefined {
    const best = leastBusy(this.endpoints, this.#rotation, (e) => e.live && !this.breakers.get(e)!.rejecting, tried);
    this.#rotation = (this.#rotation + 1) % this.endpoints.length;
    return best;
  }

  #noEndpoint(): ErrorReply {
    // An open breaker says more (and when to come back) than "not connected", whether the endpoint is
    // connected or not: the health prober may have opened it before anything failed here.
    const open = this.endpoints.filter((e) => this.breakers.get(e)!.rejecting);
    if (open.length > 0) {
      return errorReply(ErrorCode.CIRCUIT_OPEN, `circuit open for every live endpoint of backend "${this.backend.name}"`, {
        retryAfterMs: Math.min(...open.map((e) => this.breakers.get(e)!.retryAfterMs())),
        details: { backend: this.backend.name, endpoints: open.map((e) => e.id) },
      });
    }
    const waits = this.endpoints.map((e) => e.retryAfterMs()).filter((ms): ms is number => ms !== undefined);
    return errorReply(
      ErrorCode.BACKEND_UNAVAILABLE,
      `no live connection to backend "${this.backend.name}" (${this.endpoints.length} endpoint(s), reconnecting)`,
      {
        retryAfterMs: waits.length ? Math.min(...waits) : undefined,
        details: { backend: this.backend.name, endpoints: this.endpoints.map((e) => e.id) },
      },
    );
  }

  /** Run one call under every policy. Resolves with the reply to send (never rejects). */
  async execute(
    request: ToolCallRequest,
    deadline: number,
    tool: ToolDescriptor | undefined,
    signal: AbortSignal,
    onProgress?: (progress: ToolProgress) => void,
  ): Promise<ToolCallOkReply | ErrorReply> {
    if (!this.backend.policy.enabled) return this.#bare(request, deadline, signal, onProgress);
    const now = this.#now;
    const started = now();
    const retry = this.backend.policy.retry;
    const safe = isSafeToRepeat(tool, this.backend.policy.tools[request.tool]);
    const key = request.tool;
    // Endpoints this request failed on; made only when a retry needs it.
    let tried: Set<Endpoint> | undefined;
    let lastFailure: ErrorReply | undefined;
    this.#budget.deposit();

    for (let attempt = 1; ; attempt++) {
      // At the deadline, between attempts, the failure that led to the retry says more than "deadline".
      if (signal.aborted) return withAttempts(cancelledBy(signal) ? aborted(signal) : (lastFailure ?? aborted(signal)), attempt - 1);
      // The SDK adds a listener to the call's signal per attempt (two with a session re-send) and never
      // removes it; past a few attempts Node would warn of a leak that is not one. Rare, so set late.
      if (attempt === 4) setMaxListeners(64, signal);
      // 1. Deadline.
      const left = deadline - now() - REPLY_MARGIN_MS;
      if (left <= 0)
        return withAttempts(lastFailure ?? errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed before the backend was called"), attempt - 1);
      // 2. Breaker: only endpoints whose breaker admits a call are candidates.
      const endpoint = this.#pick(tried);
      if (!endpoint) return withAttempts(lastFailure ?? this.#noEndpoint(), attempt - 1);
      // 3. Bulkhead.
      let release: () => void;
      try {
        release = await this.bulkheads.get(endpoint)!.acquire(left);
      } catch (err) {
        if (!isBulkheadRejected(err)) throw err;
        const details = { endpoint: endpoint.id };
        return withAttempts(
          err.reason === "full"
            ? errorReply(ErrorCode.OVERLOADED, `endpoint ${endpoint.id} is at its limit: ${err.message}`, { details })
            : errorReply(ErrorCode.DEADLINE_EXCEEDED, `waited for a free slot on ${endpoint.id} until the deadline`, { details }),
          attempt - 1,
        );
      }
      let failure: AttemptError;
      try {
        // 4. Rate limit: a wait that would pass the deadline is refused now, not after waiting.
        if (this.#rate) {
          // Keep time for the call itself after the wait: a token that leaves none is useless.
          const callAllowance = Math.max(this.#latency.p99(key) ?? 0, RATE_LIMIT_CALL_ALLOWANCE_MS, (deadline - started) * 0.05);
          const reservation = this.#rate.reserve(deadline - now() - REPLY_MARGIN_MS - callAllowance);
          if (!reservation.ok) {
            // On a retry, the fault that led to it is the better answer than "rate limited".
            if (lastFailure) return withAttempts(lastFailure, attempt - 1);
            return errorReply(ErrorCode.RATE_LIMITED, `backend "${this.backend.name}" is limited to ${this.#rate.ratePerSec}/s; no slot before the deadline`, {
              retryAfterMs: reservation.retryAfterMs,
              details: { backend: this.backend.name },
            });
          }
          if (reservation.waitMs > 0) await sleep(reservation.waitMs, signal);
          if (signal.aborted) return withAttempts(aborted(signal), attempt - 1);
        }
        // 5. Timeout: adaptive, restarted by progress, never past the deadline (the call's signal).
        const remaining = deadline - now() - REPLY_MARGIN_MS;
        if (remaining <= 0)
          return withAttempts(lastFailure ?? errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed while waiting for a rate-limit slot"), attempt - 1);
        const adaptive = this.#latency.timeoutFor(key);
        const timeout: TimeoutContext =
          adaptive < remaining ? { timeoutMs: adaptive, limitedBy: "adaptive" } : { timeoutMs: Math.floor(remaining), limitedBy: "budget" };
        const attemptStarted = now();
        const p99 = this.#latency.p99(key);
        const result = await this.breakers.get(endpoint)!.run(async () => {
          try {
            return await endpoint.callTool(request.tool, request.arguments, {
              timeoutMs: timeout.timeoutMs,
              maxTotalMs: Math.floor(remaining),
              signal,
              onProgress,
            });
          } catch (err) {
            const fault = classify(err, { sessionSent: false, timeout });
            const timedOut = fault.code === ErrorCode.DEADLINE_EXCEEDED;
            // A call cut by the adaptive timeout took at least that long: count it, or a backend that
            // slowed down for good would be cut at the old p99 forever.
            if (timeout.limitedBy === "adaptive" && timedOut && !signal.aborted) this.#latency.record(key, timeout.timeoutMs);
            // A client in a hurry is not a failing backend: a budget shorter than this tool usually
            // takes does not count against the breaker. Nor does a call that a client or a stop cancelled.
            const impatient = timedOut && timeout.limitedBy === "budget" && p99 !== undefined && timeout.timeoutMs < p99;
            throw new AttemptError(err, fault, fault.fault && !impatient && !cancelledBy(signal));
          }
        });
        this.#latency.record(key, now() - attemptStarted);
        return this.#ok(result, endpoint, attempt, started);
      } catch (err) {
        failure =
          err instanceof AttemptError
            ? err
            : isBreakerOpen(err)
              ? new AttemptError(err, BREAKER_OPEN, false)
              : new AttemptError(err, classify(err, { sessionSent: false }), true);
      } finally {
        release();
      }

      if (cancelledBy(signal)) return withAttempts(aborted(signal), attempt);
      const reply = isBreakerOpen(failure.cause)
        ? errorReply(ErrorCode.CIRCUIT_OPEN, `circuit open for ${endpoint.id}`, {
            retryAfterMs: failure.cause.retryAfterMs,
            details: { endpoint: endpoint.id },
          })
        : faultReply(failure.fault, endpoint.id);
      // 6. Retry: faults only, and only what cannot do harm twice, within the budget and the deadline.
      const mayRepeat = !signal.aborted && (failure.fault.neverReached || (failure.counts && safe));
      if (!mayRepeat || attempt > retry.maxRetries) return withAttempts(reply, attempt);
      // Moving a call that never reached its endpoint to another one is failover, not a repeat: it
      // adds no load to the failing endpoint, so it does not spend the retry budget.
      const failover = failure.fault.neverReached && this.endpoints.some((e) => e !== endpoint && e.live && !this.breakers.get(e)!.rejecting);
      if (!failover && !this.#budget.withdraw()) return withAttempts(reply, attempt);
      const pause = backoffMs(attempt, retry.initialBackoffMs, retry.maxBackoffMs, this.#random);
      if (now() + pause >= deadline - REPLY_MARGIN_MS) return withAttempts(reply, attempt);
      (tried ??= new Set()).add(endpoint);
      lastFailure = reply;
      if (pause > 0) await sleep(pause, signal);
    }
  }

  #ok(result: unknown, endpoint: Endpoint, attempts: number, started: number): ToolCallOkReply {
    const durationMs = Math.round((this.#now() - started) * 1000) / 1000;
    return { ok: true, result: result as CallToolResult, meta: { backend: this.backend.name, endpoint: endpoint.id, attempts, cached: false, durationMs } };
  }

  /** With policies off (config `policies: false`): one attempt, the budget as the only timeout. */
  async #bare(
    request: ToolCallRequest,
    deadline: number,
    signal: AbortSignal,
    onProgress?: (progress: ToolProgress) => void,
  ): Promise<ToolCallOkReply | ErrorReply> {
    const started = this.#now();
    const endpoint = this.#pick(undefined);
    if (!endpoint) return this.#noEndpoint();
    const left = Math.floor(Math.min(deadline - started - REPLY_MARGIN_MS, this.backend.callTimeoutMs));
    if (left <= 0) return errorReply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed before the backend was called");
    try {
      const result = await endpoint.callTool(request.tool, request.arguments, { timeoutMs: left, maxTotalMs: left, signal, onProgress });
      return this.#ok(result, endpoint, 1, started);
    } catch (err) {
      return faultReply(classify(err, { sessionSent: false, timeout: { timeoutMs: left, limitedBy: "budget" } }), endpoint.id);
    }
  }
}

/** What a breaker that refused the call means to the retry loop: nothing ran, another endpoint may take it. */
const BREAKER_OPEN: Fault = {
  code: ErrorCode.CIRCUIT_OPEN,
  fault: false,
  neverReached: true,
  unreachable: false,
  sessionLost: false,
  retryable: true,
  message: "circuit open",
};

/** Who aborted the call, when a client's cancel or a stop did (the deadline is not a cancel). */
function cancelledBy(signal: AbortSignal): AbortKind | undefined {
  if (!signal.aborted) return undefined;
  const kind = signal.reason instanceof CallAbortedError ? signal.reason.kind : "stop";
  return kind === "deadline" ? undefined : kind;
}

/** The answer for a call whose signal aborted: CANCELLED, or DEADLINE_EXCEEDED at the deadline. */
export function aborted(signal: AbortSignal): ErrorReply {
  const fault = classify(signal.reason, { sessionSent: false });
  return errorReply(fault.code === ErrorCode.DEADLINE_EXCEEDED ? fault.code : ErrorCode.CANCELLED, fault.message);
}

/** Say how many attempts were made when there was more than one (`details.attempts`). */
function withAttempts(reply: ErrorReply, attempts: number): ErrorReply {
  return attempts > 1 ? { ...reply, error: { ...reply.error, details: { ...reply.error.details, attempts } } } : reply;
}
