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

  /** Reserve one token if it can be used within `maxWaitMs`. */
  reserve(maxWaitMs: number): Reservation {
    const now = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.ratePerSec) / 1000);
    this.#last = now;
    // Tokens may go below zero: each reservation queues behind the ones already made.
    const waitMs = this.#tokens >= 1 ? 0 : ((1 - this.#tokens) * 1000) / this.ratePerSec;
    if (waitMs > maxWaitMs) return { ok: false, retryAfterMs: Math.ceil(waitMs) };
    this.#tokens -= 1;
    return { ok: true, waitMs };
  }
}
