export interface RetryBudgetOptions {
  /** Retries allowed per request made (e.g. 0.2: at most one retry for five requests). */
  ratio: number;
  /** Retries allowed regardless, so a quiet backend can still be retried at all. */
  reserve: number;
}

/**
 * A retry budget (after Finagle's): every request deposits `ratio` of a retry, every retry withdraws
 * one. However the backend fails, retries stay below `reserve + ratio × requests`, so a dead backend
 * never sees a retry storm.
 */
export class RetryBudget {
  #balance: number;
  constructor(readonly options: RetryBudgetOptions) {
    this.#balance = options.reserve;
  }

  /** Count a request (a first attempt). */
  deposit(): void {
    // Capped so a long quiet spell does not bank a storm for later.
    this.#balance = Math.min(this.options.reserve + 100 * this.options.ratio, this.#balance + this.options.ratio);
  }

  /** Take one retry from the budget; false when there is none left. */
  withdraw(): boolean {
    if (this.#balance < 1) return false;
    this.#balance -= 1;
    return true;
  }
}

/**
 * Exponential backoff with full jitter: a random wait in [0, min(maxMs, initialMs × 2^(retry-1))].
 * `retry` counts from 1. Full jitter spreads the retries of many callers that failed together.
 */
export function backoffMs(retry: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, retry - 1));
  return Math.round(random() * ceiling);
}
