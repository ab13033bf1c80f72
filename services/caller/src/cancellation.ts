import { abortReason } from "./faults.js";

interface Held {
  readonly requestId: string;
  readonly timer: NodeJS.Timeout;
}

/**
 * The calls a caller holds, each with its own AbortController. The controller aborts at the call's
 * deadline, whatever progress notifications did to the MCP SDK's own timer; on a client's cancel
 * (`toolbus.v1.cancel.<backend>`); and when a stop runs out of grace. Aborting makes the SDK send
 * `notifications/cancelled` to the backend. A controller per call costs about 2 µs (Node 20 builds an
 * AbortSignal slowly), the price of cancelling one call; its listeners go with it, so nothing
 * accumulates however many calls are made.
 */
export class CallRegistry {
  readonly #calls = new Map<AbortController, Held>();

  /** Hold a call that must end within `budgetMs`; give it back with `end` however it ends. */
  start(requestId: string, budgetMs: number): AbortController {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(abortReason("deadline", "the request's deadline passed")), Math.max(0, budgetMs));
    this.#calls.set(controller, { requestId, timer });
    return controller;
  }

  end(controller: AbortController): void {
    const held = this.#calls.get(controller);
    if (!held) return;
    clearTimeout(held.timer);
    this.#calls.delete(controller);
  }

  /** Abort the calls with this request id (a client gave up on it). Returns how many there were. */
  cancel(requestId: string, reason: string): number {
    let n = 0;
    for (const [controller, held] of this.#calls) {
      if (held.requestId !== requestId) continue;
      controller.abort(abortReason("client", reason));
      n++;
    }
    return n;
  }

  /** Abort every call still out (a stop out of grace). */
  abortAll(reason: string): void {
    for (const controller of this.#calls.keys()) controller.abort(abortReason("stop", reason));
  }

  /** Calls held (for tests: it must go back to zero however many calls were made). */
  get size(): number {
    return this.#calls.size;
  }
}
