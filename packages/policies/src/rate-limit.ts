/** A token is reserved (use it after `waitMs`), or refused because the wait would pass the deadline. */
export type Reservation = { ok: true; waitMs: number } | { ok: false; retryAfterMs: number };

/**
 * Token bucket: `ratePerSec` tokens a second, at most `burst` saved up. Callers reserve a token and
 * wait (on a timer, never blocking the event loop); a caller whose wait would run past its deadline is
 * refused at once with the time after which a token would be free, instead of waiting to fail.
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly ratePerSec: number,
    readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(ratePerSec > 0) || !(burst >= 1)) throw new RangeError("rate must be > 0 and burst >= 1");
    this.#tokens = burst;
    this.#last = now();
  }

  /**
   * Reserve `amount` tokens (one request, or a request's estimated LLM tokens) if they can be used
   * within `maxWaitMs`. An amount above `burst` waits for a full bucket and leaves it in debt.
   */
  reserve(maxWaitMs: number, amount = 1): Reservation {
    this.#refill();
    // Tokens may go below zero: each reservation queues behind the ones already made.
    const need = Math.min(amount, this.burst);
    const waitMs = this.#tokens >= need ? 0 : ((need - this.#tokens) * 1000) / this.ratePerSec;
    if (waitMs > maxWaitMs) return { ok: false, retryAfterMs: Math.ceil(waitMs) };
    this.#tokens -= amount;
    return { ok: true, waitMs };
  }

  /**
   * Correct a reservation once the real cost is known (an LLM's reported usage): a positive `delta`
   * takes more tokens, a negative one gives back what the estimate took too many.
   */
  adjust(delta: number): void {
    this.#refill();
    this.#tokens = Math.min(this.burst, this.#tokens - delta);
  }

  /** Tokens in the bucket now (negative: in debt). */
  get available(): number {
    this.#refill();
    return this.#tokens;
  }

  #refill(): void {
    const now = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.ratePerSec) / 1000);
    this.#last = now;
  }
}
