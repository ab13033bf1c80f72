import { ErrorCode, type ErrorReply, type ToolCallOkReply } from "@toolbus/protocol";
import { aborted } from "./policy.js";

export type CallReply = ToolCallOkReply | ErrorReply;

/** The flight's promise, or undefined if `signal` aborts first. */
function untilAborted(flight: Promise<CallReply>, signal: AbortSignal): Promise<CallReply | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    void flight.then((reply) => {
      signal.removeEventListener("abort", onAbort);
      resolve(reply);
    });
  });
}

/**
 * Identical cacheable calls in flight at once share one backend call: the first one (the leader) calls
 * the backend, the others wait for its answer, each within its own deadline and cancel. The shared call
 * runs on the leader's budget; when the leader's own deadline or cancel ends it, a waiter with time left
 * goes on by itself (leading a new flight, or joining one that started since).
 */
export class SingleFlight {
  readonly #flights = new Map<string, Promise<CallReply>>();

  /** Calls in flight that others may join. */
  get size(): number {
    return this.#flights.size;
  }

  /**
   * Run `call` under `key`, or join the identical call already running. `signal` is this call's own
   * (deadline and cancel); `onJoin` counts joins. Never rejects if `call` never does.
   */
  async run(key: string, signal: AbortSignal, call: () => Promise<CallReply>, onJoin: () => void): Promise<{ reply: CallReply; led: boolean }> {
    for (;;) {
      const flight = this.#flights.get(key);
      if (!flight) return { reply: await this.#lead(key, call), led: true };
      onJoin();
      const reply = await untilAborted(flight, signal);
      if (reply === undefined) return { reply: aborted(signal), led: false };
      const leadersOwn = !reply.ok && (reply.error.code === ErrorCode.DEADLINE_EXCEEDED || reply.error.code === ErrorCode.CANCELLED);
      if (!leadersOwn || signal.aborted) return { reply, led: false };
    }
  }

  #lead(key: string, call: () => Promise<CallReply>): Promise<CallReply> {
    const flight = call();
    this.#flights.set(key, flight);
    const forget = (): void => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    };
    flight.then(forget, forget);
    return flight;
  }
}
