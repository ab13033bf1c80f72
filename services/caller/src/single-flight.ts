import { ErrorCode, errorReply, type ErrorReply, type ToolCallOkReply } from "@toolbus/protocol";
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

/** A call in flight: its answer (never a rejection) and the signal of the call that leads it. */
interface Flight {
  readonly reply: Promise<CallReply>;
  readonly leader: AbortSignal;
}

/**
 * Identical cacheable calls in flight at once share one backend call: the first one (the leader) calls
 * the backend, the others wait for its answer, each within its own deadline and cancel. The shared call
 * runs on the leader's budget; if the leader's own deadline or cancel ends it (its signal aborted), a
 * waiter with time left goes on by itself (leading a new flight, or joining one that started since).
 * Any other answer, a backend timeout included, is every waiter's answer: a failing backend is not
 * called once per waiter.
 */
export class SingleFlight {
  readonly #flights = new Map<string, Flight>();

  /** Calls in flight that others may join. */
  get size(): number {
    return this.#flights.size;
  }

  /**
   * Run `call` under `key`, or join the identical call already running. `signal` is this call's own
   * (deadline and cancel); `onJoin` counts joins. Rejects only if this call's own `call` rejects.
   */
  async run(key: string, signal: AbortSignal, call: () => Promise<CallReply>, onJoin: () => void): Promise<{ reply: CallReply; led: boolean }> {
    for (;;) {
      const flight = this.#flights.get(key);
      if (!flight) return { reply: await this.#lead(key, signal, call), led: true };
      onJoin();
      const reply = await untilAborted(flight.reply, signal);
      if (reply === undefined) return { reply: aborted(signal), led: false };
      if (!flight.leader.aborted || signal.aborted) return { reply, led: false };
    }
  }

  #lead(key: string, signal: AbortSignal, call: () => Promise<CallReply>): Promise<CallReply> {
    const answer = call();
    // Waiters get an answer even if the leader's call fails with a bug (the leader's own handler reports it).
    const shared = answer.catch((err: unknown) =>
      errorReply(ErrorCode.INTERNAL, `the shared call failed: ${err instanceof Error ? err.message : String(err)}`),
    );
    const flight: Flight = { reply: shared, leader: signal };
    this.#flights.set(key, flight);
    void shared.then(() => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    });
    return answer;
  }
}
