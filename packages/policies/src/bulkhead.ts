/** Why a bulkhead turned a call away. */
export class BulkheadRejected extends Error {
  override name = "BulkheadRejected";
  constructor(
    readonly reason: "full" | "timeout",
    message: string,
  ) {
    super(message);
  }
}

export function isBulkheadRejected(err: unknown): err is BulkheadRejected {
  return err instanceof Error && err.name === "BulkheadRejected";
}

interface Waiter {
  grant: (release: () => void) => void;
  timer: NodeJS.Timeout;
}

/**
 * At most `maxConcurrent` calls at once; up to `maxQueue` more wait for a slot, each no longer than
 * its budget allows. Beyond that a call is rejected at once ("full").
 */
export class Bulkhead {
  #active = 0;
  readonly #queue: Waiter[] = [];

  constructor(
    readonly maxConcurrent: number,
    readonly maxQueue: number,
  ) {
    if (!(maxConcurrent >= 1) || !(maxQueue >= 0)) throw new RangeError("maxConcurrent must be >= 1 and maxQueue >= 0");
  }

  get active(): number {
    return this.#active;
  }
  get queued(): number {
    return this.#queue.length;
  }

  /** Take a slot, waiting at most `maxWaitMs`. Resolves with the function that gives it back (once). */
  acquire(maxWaitMs: number): Promise<() => void> {
    if (this.#active < this.maxConcurrent) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.maxQueue) {
      return Promise.reject(
        new BulkheadRejected("full", `${this.#active} calls in flight and ${this.#queue.length} queued (limits ${this.maxConcurrent} + ${this.maxQueue})`),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: resolve,
        timer: setTimeout(() => {
          this.#queue.splice(this.#queue.indexOf(waiter), 1);
          reject(new BulkheadRejected("timeout", `no free slot within the ${Math.round(maxWaitMs)} ms left`));
        }, maxWaitMs),
      };
      this.#queue.push(waiter);
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) {
        // The slot passes straight to the next waiter: active stays the same.
        clearTimeout(next.timer);
        next.grant(this.#releaser());
      } else {
        this.#active--;
      }
    };
  }
}
