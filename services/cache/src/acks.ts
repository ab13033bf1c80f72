import type { NatsConnection } from "nats";
import { subjects } from "@toolbus/protocol";

/**
 * Acknowledgements to the routers that handed us calls: the tickets of the calls answered or sent on,
 * one message per router per turn of the event loop (under load a message carries many tickets).
 * A router sends to the backend itself any call whose ticket does not come back in time, so a cache
 * that dies with calls in hand loses none of them.
 */
export class Acks {
  readonly #pending = new Map<string, string[]>();
  #scheduled = false;

  constructor(private readonly nc: NatsConnection) {}

  add(routerId: string, ticket: string): void {
    const tickets = this.#pending.get(routerId);
    if (tickets) tickets.push(ticket);
    else this.#pending.set(routerId, [ticket]);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.#scheduled = false;
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
