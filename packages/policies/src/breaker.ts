import CircuitBreaker from "opossum";

export const BreakerState = { closed: "closed", open: "open", halfOpen: "half-open" } as const;
export type BreakerState = (typeof BreakerState)[keyof typeof BreakerState];

export interface BreakerOptions {
  /** Calls in the window before the breaker may open at all. */
  volumeThreshold: number;
  /** Opens when more than this percentage of the calls in the window failed. */
  errorPercentage: number;
  /** The rolling window the percentages are counted over. */
  windowMs: number;
  /** How long it stays open before letting one probe through (half-open). */
  recoveryMs: number;
}

export interface BreakerTransition {
  from: BreakerState;
  to: BreakerState;
  reason: string;
}

/** The breaker is open: the call was not made. */
export class BreakerOpenError extends Error {
  override name = "BreakerOpenError";
  constructor(
    readonly endpoint: string,
    readonly retryAfterMs: number,
  ) {
    super(`circuit open for ${endpoint}`);
  }
}

export function isBreakerOpen(err: unknown): err is BreakerOpenError {
  return err instanceof Error && err.name === "BreakerOpenError";
}

/**
 * A circuit breaker for one endpoint (opossum underneath). Only what `isFault` calls a backend fault
 * counts as a failure: a tool's own error, bad arguments, or a rejection by a rate limit never opens
 * it. Open → calls fail at once; after `recoveryMs` one probe goes through (half-open) and its outcome
 * closes or re-opens the breaker.
 */
export class Breaker {
  readonly #breaker: CircuitBreaker<[() => Promise<unknown>], unknown>;
  #state: BreakerState = BreakerState.closed;
  #openedAt = 0;
  #lastFault = "";
  /** A reason given from outside (a health event) for the next transition, and events held back meanwhile. */
  #reasonFromOutside: string | undefined;
  #quiet = false;

  constructor(
    readonly endpoint: string,
    readonly options: BreakerOptions,
    isFault: (err: unknown) => boolean,
    onTransition: (t: BreakerTransition) => void,
  ) {
    this.#breaker = new CircuitBreaker((action: () => Promise<unknown>) => action(), {
      timeout: false,
      volumeThreshold: options.volumeThreshold,
      errorThresholdPercentage: options.errorPercentage,
      rollingCountTimeout: options.windowMs,
      rollingCountBuckets: 10,
      resetTimeout: options.recoveryMs,
      // opossum counts a filtered error as a success: the backend answered, just not with a result.
      // Not while half-open, though: a success there closes the breaker, and a probe that ended in the
      // caller's mistake has not shown the backend healthy; it counts as a failed probe instead.
      errorFilter: (err: unknown) => !isFault(err) && !this.#breaker.halfOpen,
      // Off: with them on, opossum keeps every call's latency for the whole window and sorts them all
      // (hundreds of thousands at load) on every snapshot and every failure. We have our own estimator.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    });
    const move = (to: BreakerState, reason: () => string): void => {
      if (this.#quiet) return;
      const from = this.#state;
      if (from === to) return;
      const why = this.#reasonFromOutside ?? reason();
      this.#reasonFromOutside = undefined;
      this.#state = to;
      if (to === BreakerState.open) this.#openedAt = Date.now();
      onTransition({ from, to, reason: why });
    };
    this.#breaker.on("failure", (err: unknown) => (this.#lastFault = err instanceof Error ? err.message : String(err)));
    this.#breaker.on("open", () =>
      move(BreakerState.open, () =>
        this.#state === BreakerState.halfOpen ? `probe failed: ${this.#lastFault}` : `failure rate over ${options.errorPercentage}%: ${this.#lastFault}`,
      ),
    );
    this.#breaker.on("halfOpen", () => move(BreakerState.halfOpen, () => `${options.recoveryMs} ms since it opened; letting one probe through`));
    this.#breaker.on("close", () => move(BreakerState.closed, () => (this.#state === BreakerState.halfOpen ? "probe succeeded" : "closed")));
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** True when a call now would be refused (open, or half-open with the probe already out). */
  get rejecting(): boolean {
    return !this.#breaker.closed && !this.#breaker.pendingClose;
  }

  /** Ms until the breaker lets a probe through (0 when not open). */
  retryAfterMs(): number {
    return this.#state === BreakerState.open ? Math.max(0, this.#openedAt + this.options.recoveryMs - Date.now()) : 0;
  }

  /** Run `action` through the breaker. Throws BreakerOpenError without running it when open. */
  async run<T>(action: () => Promise<T>): Promise<T> {
    try {
      return (await this.#breaker.fire(action)) as T;
    } catch (err) {
      if ((err as { code?: string }).code === "EOPENBREAKER") throw new BreakerOpenError(this.endpoint, this.retryAfterMs());
      throw err;
    }
  }

  /** Open now, without a failed call (the health prober found the endpoint unhealthy). */
  open(reason = "opened from outside"): void {
    if (this.#state === BreakerState.open) return;
    this.#reasonFromOutside = reason;
    this.#breaker.open();
  }

  /**
   * Let the next call through as a probe now, without waiting out `recoveryMs` (the health prober found
   * the endpoint healthy again). opossum has no call for this: it is re-opened with a zero recovery
   * time, its intermediate transitions kept quiet, so it goes half-open on the next tick.
   */
  halfOpen(reason = "half-open from outside"): void {
    if (this.#state !== BreakerState.open) return;
    const options = (this.#breaker as unknown as { options: { resetTimeout: number } }).options;
    const recovery = options.resetTimeout;
    this.#quiet = true;
    try {
      options.resetTimeout = 0;
      this.#breaker.close();
      this.#breaker.open();
    } finally {
      options.resetTimeout = recovery;
      this.#quiet = false;
    }
    this.#reasonFromOutside = reason;
  }

  /** Stop the breaker's timers. */
  shutdown(): void {
    this.#breaker.shutdown();
  }
}
