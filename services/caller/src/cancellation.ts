import { setMaxListeners } from "node:events";

/** How many calls share one AbortController. */
const CALLS_PER_SIGNAL = 64;

/** A controller whose signal may carry one listener per sharing call without Node warning of a leak. */
function newController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(CALLS_PER_SIGNAL + 1, controller.signal);
  return controller;
}

/**
 * The abort signals that let a stop cancel the calls still out when its grace period ends. A fresh
 * AbortController per call costs ~3 µs (a tenth of a call's CPU here), and one controller for every
 * call ever made collects a listener per call (the SDK never removes the one it adds), so calls share
 * a controller, 64 at most: listeners stay few, and old controllers are dropped with their calls.
 */
export class Cancellation {
  #current = newController();
  #uses = 0;
  readonly #inFlight = new Map<AbortController, number>();

  /** The controller for a call that starts now; give it back with `release` when the call ends. */
  acquire(): AbortController {
    if (this.#uses >= CALLS_PER_SIGNAL) {
      // The old one stays only while calls that hold it are out.
      if (!this.#inFlight.get(this.#current)) this.#inFlight.delete(this.#current);
      this.#current = newController();
      this.#uses = 0;
    }
    this.#uses++;
    this.#inFlight.set(this.#current, (this.#inFlight.get(this.#current) ?? 0) + 1);
    return this.#current;
  }

  release(controller: AbortController): void {
    const left = (this.#inFlight.get(controller) ?? 1) - 1;
    if (left > 0 || controller === this.#current) this.#inFlight.set(controller, left);
    else this.#inFlight.delete(controller);
  }

  /** Abort every call still out. */
  abortAll(): void {
    for (const [controller, calls] of this.#inFlight) if (calls > 0) controller.abort();
  }

  /** Controllers kept (for tests: it must stay small however many calls are made). */
  get size(): number {
    return this.#inFlight.size;
  }
}
