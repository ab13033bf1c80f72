import type { NatsConnection } from "nats";
import { subjects } from "@toolbus/protocol";

/**
 * How long tickets wait to be sent together: far below a router's hand-off timeout (250 ms), and long
 * enough that under load one message carries hundreds of them (a message per call would cost a hit a
 * fifth of its CPU).
 */
const ACK_BATCH_MS = 10;

/**
 * Acknowledgements to the routers that handed us calls: the tickets of the calls answered or sent on,
 * one message per router every ACK_BATCH_MS.
 * A router sends to the backend itself any call whose ticket does not come back in time, so a cache
 * that dies with calls in hand loses none of them.
 */
export class Acks {
  readonly #pending = new Map<string, string[]>();
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly nc: NatsConnection) {}

  add(routerId: string, ticket: string): void {
    const tickets = this.#pending.get(routerId);
    if (tickets) tickets.push(ticket);
    else this.#pending.set(routerId, [ticket]);
    if (!this.#timer) {
      this.#timer = setTimeout(() => this.flush(), ACK_BATCH_MS);
      this.#timer.unref();
    }
  }

  /** Send what is pending now (a stopping cache calls this last). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const [routerId, tickets] of this.#pending) {
      try {
        this.nc.publish(subjects.cacheAck(routerId), tickets.join(","));
      } catch {
        // A router id that is not a subject token (not a router of ours), or a closed connection.
      }
    }
    this.#pending.clear();
  }
}
