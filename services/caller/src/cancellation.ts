import { abortReason } from "@toolbus/mcp-http";

/** How long a cancel that found no call waits for it, and how many such cancels are kept. */
const EARLY_CANCEL_TTL_MS = 10_000;
const EARLY_CANCELS_KEPT = 10_000;

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
  /**
   * Cancels that found no call, kept a while by request id (with when they expire): on the router's
   * path the cancel goes straight to the callers while the call itself takes one more hop, so a client
   * that aborts at once can beat its own call here.
   */
  readonly #early = new Map<string, number>();

  /** Hold a call that must end within `budgetMs`; give it back with `end` however it ends. */
  start(requestId: string, budgetMs: number): AbortController {
    const controller = new AbortController();
    if (this.#early.size > 0 && this.#early.delete(requestId)) controller.abort(abortReason("client", "cancelled by the client before it arrived"));
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
  cancel(requestId: string, reason: string, now = Date.now()): number {
    let n = 0;
    for (const [controller, held] of this.#calls) {
      if (held.requestId !== requestId) continue;
      controller.abort(abortReason("client", reason));
      n++;
    }
    if (n === 0) this.#remember(requestId, now);
    return n;
  }

  #remember(requestId: string, now: number): void {
    for (const [id, expires] of this.#early) {
      // Oldest first (insertion order): drop the expired, and the oldest past the cap.
      if (expires > now && this.#early.size < EARLY_CANCELS_KEPT) break;
      this.#early.delete(id);
    }
    this.#early.set(requestId, now + EARLY_CANCEL_TTL_MS);
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
