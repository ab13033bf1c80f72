import type { LlmBackendConfig } from "@toolbus/config";
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
import { ErrorCode, errorReply, monotonicNow, type ErrorReply, type LlmChatRequest, type LlmDelivered, type LlmDelta } from "@toolbus/protocol";
import { CallAbortedError } from "@toolbus/mcp-http";
import { isLlmHttpError, isLlmResponseTooLargeError, isLlmTimeoutError, type LlmEndpoint, type LlmTimeoutKind } from "./endpoint.js";
import { estimateTokens, isProviderProtocolError, promptChars, type Completion, type Provider } from "./providers.js";
import { REPLY_MARGIN_MS, leastBusy, sleep } from "../shared.js";

/** A 429 without any wait in its headers cools the endpoint down this long. */
const DEFAULT_COOLDOWN_MS = 1_000;
/** A rate-limit wait is taken only if at least this much of the budget is left for the call after it. */
const MIN_CALL_ALLOWANCE_MS = 50;

export type Complexity = "simple" | "complex";

/** The seed's split: a long prompt, a large `maxTokens` or `intent: analysis` make a request complex. */
export function complexityOf(request: LlmChatRequest, rule: LlmBackendConfig["llm"]["complexity"]): Complexity {
  if (request.intent === "analysis") return "complex";
  if ((request.maxTokens ?? 0) > rule.maxTokens) return "complex";
  return promptChars(request) > rule.promptChars ? "complex" : "simple";
}

export type LlmOutcome =
  | {
      ok: true;
      completion: Completion;
      endpoint: LlmEndpoint;
      attempts: number;
      /** From the start of the attempt that answered (so is `attemptMs`); `durationMs` from the first. */
      firstTokenMs: number | undefined;
      attemptMs: number;
      durationMs: number;
      /** Chunks sent to the client (streams). */
      chunks: number;
    }
  | {
      ok: false;
      reply: ErrorReply;
      /** Nothing reached the client and another backend may do better: the caller may fall back. */
      fallback: boolean;
      attempts: number;
    };

/** One failed attempt, classified: its answer, and what may follow it. */
interface Failure {
  reply: ErrorReply;
  /** Counts toward the endpoint's breaker (a fault of the backend, not a refusal or a cancel). */
  counts: boolean;
  /** Repeating it may succeed (on this or another endpoint). */
  retryable: boolean;
  fallback: boolean;
  /** The endpoint asked to be left alone this long (429/503 Retry-After). */
  coolMs?: number;
  /** Which clock cut the attempt, if one did. */
  timeout?: LlmTimeoutKind;
  /** The provider refused it or never got it: its tokens/min reservation is given back. */
  refund?: boolean;
}

class AttemptFault extends Error {
  override name = "AttemptFault";
  constructor(readonly failure: Failure) {
    super(failure.reply.error.message);
  }
}

/**
 * The policies of one LLM backend, in the same units as an MCP backend's: a breaker per endpoint,
 * cool-downs a provider asked for (429/503 with Retry-After), requests/s and tokens/min buckets,
 * timeouts by complexity and then adaptive per model, and retries (only before the first chunk reached
 * the client) within a retry budget and the deadline.
 */
export class LlmPolicy {
  readonly breakers = new Map<LlmEndpoint, Breaker>();
  /** Per endpoint: at most its pool's connections at once, the rest wait their turn (within their budget). */
  readonly bulkheads = new Map<LlmEndpoint, Bulkhead>();
  readonly #requests: TokenBucket | undefined;
  readonly #tokens: TokenBucket | undefined;
  readonly #latency: LatencyEstimator;
  readonly #budget: RetryBudget;
  #rotation = 0;

  constructor(
    private readonly backend: LlmBackendConfig,
    private readonly endpoints: readonly LlmEndpoint[],
    private readonly provider: Provider,
    onBreaker: (endpoint: LlmEndpoint, t: BreakerTransition) => void,
    private readonly now: () => number = monotonicNow,
    /**
     * Told of every charge to the rate-limit buckets (requests, tokens; negative: given back), so the
     * other replicas of this backend's caller charge theirs too (`peerUsed`): the limits hold for the
     * backend as a whole, not once per replica.
     */
    private readonly share: (requests: number, tokens: number) => void = () => undefined,
  ) {
    const p = backend.policy;
    for (const endpoint of endpoints)
      this.breakers.set(
        endpoint,
        new Breaker(
          endpoint.id,
          p.breaker,
          (err) => err instanceof AttemptFault && err.failure.counts,
          (t) => onBreaker(endpoint, t),
        ),
      );
    for (const endpoint of endpoints) this.bulkheads.set(endpoint, new Bulkhead(backend.connections, p.bulkhead.maxQueue));
    this.#requests = p.rateLimit && new TokenBucket(p.rateLimit.ratePerSec, p.rateLimit.burst, now);
    const tpm = backend.llm.tokensPerMinute;
    this.#tokens = tpm === undefined ? undefined : new TokenBucket(tpm / 60, tpm, now);
    this.#latency = new LatencyEstimator({ ...p.adaptive, maxMs: backend.llm.complexTimeoutMs, defaultMs: backend.llm.complexTimeoutMs });
    this.#budget = new RetryBudget({ ratio: p.retry.budgetRatio, reserve: p.retry.budgetReserve });
  }

  close(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
  }

  /** Another replica of this backend's caller used (or gave back) this much: charge our buckets too. */
  peerUsed(requests: number, tokens: number): void {
    if (requests !== 0) this.#requests?.adjust(requests);
    if (tokens !== 0) this.#tokens?.adjust(tokens);
  }

  /** Charge (or, negative, give back) ours, and tell the other replicas. */
  #charge(requests: number, tokens: number): void {
    if (!this.#requests) requests = 0;
    if (!this.#tokens) tokens = 0;
    if (requests === 0 && tokens === 0) return;
    this.peerUsed(requests, tokens);
    this.share(requests, tokens);
  }

  /** `multiplier` × the p99 seen for `key`, within [min, ceiling]; the ceiling until there are enough samples. */
  #adaptive(key: string, ceilingMs: number): number {
    const p99 = this.#latency.p99(key);
    if (p99 === undefined) return ceilingMs;
    const { multiplier, minMs } = this.backend.policy.adaptive;
    return Math.min(ceilingMs, Math.max(minMs, Math.ceil(p99 * multiplier)));
  }

  /** The least-busy endpoint that is neither open nor cooling down (round-robin among equals). */
  #pick(tried: ReadonlySet<LlmEndpoint>): LlmEndpoint | undefined {
    const wall = Date.now();
    const best = leastBusy(this.endpoints, this.#rotation, (e) => e.coolingMs(wall) === 0 && !this.breakers.get(e)!.rejecting, tried);
    this.#rotation = (this.#rotation + 1) % this.endpoints.length;
    return best;
  }

  /** Why no endpoint can take a call now: all cooling down (RATE_LIMITED) or open (CIRCUIT_OPEN), with when to come back. */
  #noEndpoint(): Failure {
    const wall = Date.now();
    const cooling = this.endpoints.map((e) => e.coolingMs(wall)).filter((ms) => ms > 0);
    const details = { backend: this.backend.name };
    if (cooling.length === this.endpoints.length) {
      const wait = Math.min(...cooling);
      return {
        reply: errorReply(ErrorCode.RATE_LIMITED, `backend "${this.backend.name}" asked to be left alone for ${wait} ms more (Retry-After)`, {
          retryAfterMs: wait,
          details,
        }),
        counts: false,
        retryable: false,
        fallback: true,
        coolMs: wait,
      };
    }
    const open = this.endpoints.filter((e) => this.breakers.get(e)!.rejecting);
    return {
      reply: errorReply(ErrorCode.CIRCUIT_OPEN, `circuit open for every endpoint of backend "${this.backend.name}"`, {
        retryAfterMs: Math.min(...open.map((e) => this.breakers.get(e)!.retryAfterMs())),
        details: { ...details, endpoints: open.map((e) => e.id) },
      }),
      counts: false,
      retryable: false,
      fallback: true,
    };
  }

  /**
   * Make the call: attempts until one answers, a failure may not be repeated, or the deadline.
   * `onDeltas` (streams) gets each piece of the answer and says how many chunks it sent the client;
   * once one has, nothing is retried. `spareForFallback`: another backend is waiting in line, so this
   * one's attempts (retries included) must give up by half the budget, leaving the fallback the other
   * half, and a rate limit or a cool-down here sends the chat there at once instead of waiting.
   */
  async run(
    request: LlmChatRequest,
    model: string,
    deadline: number,
    signal: AbortSignal,
    options: { onDeltas?: (deltas: LlmDelta[]) => number; spareForFallback: boolean },
  ): Promise<LlmOutcome> {
    const now = this.now;
    const started = now();
    const stream = options.onDeltas !== undefined;
    const retry = this.backend.policy.retry;
    const llm = this.backend.llm;
    const complexity = complexityOf(request, llm.complexity);
    const ceiling = complexity === "complex" ? llm.complexTimeoutMs : this.backend.callTimeoutMs;
    // Keyed by a model this backend lists: a client's made-up model names must not grow the map.
    const latencyKey = `${this.backend.models.includes(model) ? model : "other"}|${complexity}|${stream ? "first" : "total"}`;
    const estimate = estimateTokens(request);
    // Where this backend's attempts must stop when a fallback waits: the first half of the budget.
    const giveUpAt = options.spareForFallback ? started + (deadline - started) / 2 : deadline - REPLY_MARGIN_MS;
    const tried = new Set<LlmEndpoint>();
    const delivered: LlmDelivered = { chunks: 0, contentChars: 0 };
    let last: Failure | undefined;
    this.#budget.deposit();

    const done = (failure: Failure, attempts: number): LlmOutcome => {
      const reply = attempts > 1 ? withDetails(failure.reply, { attempts }) : failure.reply;
      if (delivered.chunks === 0) return { ok: false, reply, fallback: failure.fallback, attempts };
      return { ok: false, reply: withDetails(reply, { delivered: { ...delivered } }), fallback: false, attempts };
    };

    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) return done(last && !cancelled(signal) ? last : abortFailure(signal), attempt - 1);
      const left = giveUpAt - now();
      if (left <= 0) return done(last ?? timeoutFailure("the deadline passed before the backend was called", options.spareForFallback), attempt - 1);
      // Cooling down (the provider asked for it) or open: RATE_LIMITED or CIRCUIT_OPEN at once, with when
      // to come back; a fallback, if any, takes the chat now.
      const endpoint = this.#pick(tried);
      if (!endpoint) return done(last ?? this.#noEndpoint(), attempt - 1);
      // Rate limits: a wait that would leave no time for the call is refused now, not after waiting;
      // with a fallback in line, any wait is.
      const allowance = Math.max(MIN_CALL_ALLOWANCE_MS, (deadline - started) * 0.05);
      const maxWait = options.spareForFallback ? 0 : Math.max(0, left - allowance);
      let waitMs = 0;
      if (this.#requests) {
        const r = this.#requests.reserve(maxWait);
        if (!r.ok) return done(last ?? rateLimited(`${this.#requests.ratePerSec} requests/s`, r.retryAfterMs, this.backend.name), attempt - 1);
        waitMs = r.waitMs;
      }
      if (this.#tokens) {
        const r = this.#tokens.reserve(maxWait, estimate);
        if (!r.ok) {
          // The request slot taken above is not used after all.
          this.#requests?.adjust(-1);
          return done(
            last ?? rateLimited(`${llm.tokensPerMinute} tokens/min (this request: about ${estimate})`, r.retryAfterMs, this.backend.name),
            attempt - 1,
          );
        }
        waitMs = Math.max(waitMs, r.waitMs);
      }
      // Both reservations made here: the other replicas hear of them.
      this.share(this.#requests ? 1 : 0, this.#tokens ? estimate : 0);
      if (waitMs > 0) await sleep(waitMs, signal);
      // A free connection of the pool: the clocks of the attempt start once it has one, so a queue of
      // chats behind long streams is not taken for a slow backend.
      let release: () => void;
      try {
        if (signal.aborted) throw signal.reason;
        release = await this.bulkheads.get(endpoint)!.acquire(Math.max(1, giveUpAt - now()));
      } catch (err) {
        this.#charge(-1, -estimate);
        if (signal.aborted) return done(abortFailure(signal), attempt - 1);
        if (!isBulkheadRejected(err)) throw err;
        const full = err.reason === "full";
        const reply = errorReply(
          full ? ErrorCode.OVERLOADED : ErrorCode.DEADLINE_EXCEEDED,
          full ? `${endpoint.id} is at its limit: ${err.message}` : `waited for a free connection to ${endpoint.id} until the deadline`,
          { details: { endpoint: endpoint.id } },
        );
        return done(last ?? { reply, counts: false, retryable: false, fallback: true, refund: true }, attempt - 1);
      }
      // Timeouts: by complexity, then adaptive per model; never past the deadline, nor (with a fallback
      // in line) past the half of the budget kept for it.
      const remaining = Math.max(1, Math.floor(giveUpAt - now()));
      const totalMs = Math.max(1, Math.min(Math.floor(deadline - REPLY_MARGIN_MS - now()), stream ? ceiling : this.#adaptive(latencyKey, ceiling)));
      const firstTokenMs = Math.min(stream ? this.#adaptive(latencyKey, llm.firstTokenTimeoutMs) : totalMs, totalMs, remaining);
      const attemptStarted = now();
      let firstAt: number | undefined;
      tried.add(endpoint);
      try {
        const completion = await this.breakers.get(endpoint)!.run(async () => {
          try {
            return await endpoint.attempt({
              body: this.provider.body(request, model, stream),
              stream,
              model,
              signal,
              firstTokenMs,
              idleMs: llm.idleTimeoutMs,
              totalMs,
              onDeltas:
                options.onDeltas &&
                ((deltas) => {
                  firstAt ??= now();
                  delivered.chunks += options.onDeltas!(deltas);
                  for (const d of deltas) delivered.contentChars += d.content?.length ?? 0;
                }),
            });
          } catch (err) {
            throw new AttemptFault(classify(err, signal, endpoint.id));
          }
        });
        const end = now();
        const firstTokenLatency = firstAt === undefined ? undefined : firstAt - attemptStarted;
        this.#latency.record(latencyKey, stream ? (firstTokenLatency ?? end - attemptStarted) : end - attemptStarted);
        // Correct the tokens/min bucket upward when the provider says more was used than estimated. Not
        // downward: providers count maxTokens against their own limit when the request arrives, so
        // giving the reservation back would overrun theirs.
        const used = completion.usage.inputTokens + completion.usage.outputTokens;
        if (used > estimate) this.#charge(0, used - estimate);
        return {
          ok: true,
          completion,
          endpoint,
          attempts: attempt,
          firstTokenMs: firstTokenLatency,
          attemptMs: end - attemptStarted,
          durationMs: end - started,
          chunks: delivered.chunks,
        };
      } catch (err) {
        const failure: Failure =
          err instanceof AttemptFault
            ? err.failure
            : isBreakerOpen(err)
              ? {
                  reply: errorReply(ErrorCode.CIRCUIT_OPEN, `circuit open for ${endpoint.id}`, {
                    retryAfterMs: err.retryAfterMs,
                    details: { endpoint: endpoint.id },
                  }),
                  counts: false,
                  retryable: true,
                  fallback: true,
                  refund: true,
                }
              : classify(err, signal, endpoint.id);
        // A request the provider refused, or never got, costs nothing of its tokens/min; one it worked
        // on (a timeout, a cut stream, a cancel) keeps its charge.
        if (failure.refund && delivered.chunks === 0) this.#charge(0, -estimate);
        if (failure.coolMs !== undefined) endpoint.coolDown(failure.coolMs);
        // An attempt cut by the adaptive timeout took at least that long: count it, or a model that slowed
        // down for good would be cut at the old p99 forever (not when the half kept for a fallback cut it).
        if (failure.timeout === "total" && !stream && totalMs <= remaining) this.#latency.record(latencyKey, totalMs);
        if (failure.timeout === "first-token" && stream && firstTokenMs < remaining) this.#latency.record(latencyKey, firstTokenMs);
        last = failure;
        if (delivered.chunks > 0 || signal.aborted || !failure.retryable || attempt > retry.maxRetries) return done(failure, attempt);
        const other = this.endpoints.some((e) => !tried.has(e) && e.coolingMs() === 0 && !this.breakers.get(e)!.rejecting);
        // A 429 on the only endpoint: RATE_LIMITED with the wait it asked for (or the fallback), not a retry.
        if (failure.coolMs !== undefined && !other) return done(failure, attempt);
        if (!other && !this.#budget.withdraw()) return done(failure, attempt);
        const pause = backoffMs(attempt, retry.initialBackoffMs, retry.maxBackoffMs);
        if (now() + pause + MIN_CALL_ALLOWANCE_MS >= giveUpAt) return done(failure, attempt);
        if (!other) tried.clear();
        if (pause > 0) await sleep(pause, signal);
      } finally {
        release();
      }
    }
  }
}

function withDetails(reply: ErrorReply, details: Record<string, unknown>): ErrorReply {
  return { ...reply, error: { ...reply.error, details: { ...reply.error.details, ...details } } };
}

function rateLimited(limit: string, retryAfterMs: number, backend: string): Failure {
  return {
    reply: errorReply(ErrorCode.RATE_LIMITED, `backend "${backend}" is limited to ${limit}; no room before the deadline`, {
      retryAfterMs,
      details: { backend },
    }),
    counts: false,
    retryable: false,
    fallback: true,
  };
}

function timeoutFailure(message: string, fallback = false): Failure {
  return { reply: errorReply(ErrorCode.DEADLINE_EXCEEDED, message), counts: false, retryable: false, fallback };
}

/** A client's cancel or a stop (the deadline is not a cancel). */
function cancelled(signal: AbortSignal): boolean {
  return signal.aborted && !(signal.reason instanceof CallAbortedError && signal.reason.kind === "deadline");
}

function abortFailure(signal: AbortSignal): Failure {
  const reason = signal.reason as unknown;
  const message = reason instanceof Error ? reason.message : "cancelled";
  if (!cancelled(signal)) return timeoutFailure(message);
  return { reply: errorReply(ErrorCode.CANCELLED, message), counts: false, retryable: false, fallback: false };
}

const NEVER_REACHED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT", "EHOSTUNREACH", "ENETUNREACH"]);

/** What an attempt's error means: the code the client gets, and whether it counts, may be repeated or fall back. */
export function classify(err: unknown, signal: AbortSignal, endpoint: string): Failure {
  const details = { endpoint };
  if (signal.aborted && (err === signal.reason || !(isLlmHttpError(err) || isLlmTimeoutError(err)))) return abortFailure(signal);
  if (isLlmTimeoutError(err)) {
    return {
      reply: errorReply(ErrorCode.DEADLINE_EXCEEDED, `${endpoint}: ${err.message}`, { details: { ...details, timeout: err.kind, timeoutMs: err.timeoutMs } }),
      counts: true,
      // Once streaming, an idle or total timeout is final (nothing is repeated after a chunk was sent).
      retryable: true,
      fallback: true,
      timeout: err.kind,
    };
  }
  if (isLlmHttpError(err)) {
    const d = { ...details, status: err.status };
    if (err.status === 429) {
      const wait = err.retryAfterMs ?? DEFAULT_COOLDOWN_MS;
      return {
        reply: errorReply(ErrorCode.RATE_LIMITED, `${endpoint} answered 429: ${err.message}`, { retryAfterMs: wait, details: d }),
        counts: false,
        retryable: true,
        fallback: true,
        coolMs: wait,
        refund: true,
      };
    }
    if (err.status >= 500 || err.status === 408) {
      return {
        reply: errorReply(ErrorCode.BACKEND_UNAVAILABLE, `${endpoint}: ${err.message}`, { retryAfterMs: err.retryAfterMs, details: d }),
        counts: true,
        retryable: true,
        fallback: true,
        refund: true,
        ...(err.retryAfterMs !== undefined ? { coolMs: err.retryAfterMs } : {}),
      };
    }
    // 400, 401, 404, 422...: the provider refused this request; sending it again (or elsewhere) would not help.
    return {
      reply: errorReply(ErrorCode.BACKEND_ERROR, `${endpoint}: ${err.message}`, { details: d }),
      counts: false,
      retryable: false,
      fallback: false,
      refund: true,
    };
  }
  if (isLlmResponseTooLargeError(err)) {
    // Another backend's answer to the same request would be as large: neither repeated nor moved.
    return {
      reply: errorReply(ErrorCode.PAYLOAD_TOO_LARGE, `${endpoint}: ${err.message}, more than a reply can carry (stream it instead)`, {
        details: { ...details, limitBytes: err.limitBytes },
      }),
      counts: false,
      retryable: false,
      fallback: false,
    };
  }
  if (isProviderProtocolError(err)) {
    return {
      reply: errorReply(ErrorCode.BACKEND_ERROR, `${endpoint} does not speak the API: ${err.message}`, { retryable: true, details }),
      counts: true,
      retryable: true,
      fallback: true,
    };
  }
  const code = (err as { code?: string } | undefined)?.code ?? "";
  const message = err instanceof Error ? err.message : String(err);
  return {
    reply: errorReply(ErrorCode.BACKEND_UNAVAILABLE, `${endpoint}: ${message}${code ? ` (${code})` : ""}`, {
      details: { ...details, ...(code ? { cause: code } : {}), neverReached: NEVER_REACHED.has(code) },
    }),
    counts: true,
    retryable: true,
    fallback: true,
    refund: NEVER_REACHED.has(code),
  };
}
