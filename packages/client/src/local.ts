import type { Msg, MsgHdrs, Payload, PublishOptions } from "nats";

/** A worker's handler of a subject, as it handles the messages NATS delivers. */
export type LocalHandler = (msg: Msg) => void;

/**
 * Requests carried inside one process. When the worker that serves a subject runs in the same process
 * as the client that sends to it (`toolbus up`: the front door and the callers), the message goes
 * straight to the worker's handler instead of out to the NATS server and back, and so does its answer.
 * Same bytes, same headers, same deadline and request id; only the carrier differs. Measured through
 * the front door: about half the p50 and 1.5x the calls/s of the same call over the server.
 *
 * Everything else stays on the bus: cancels, progress, heartbeats, events. A worker serves here only
 * while it serves on NATS (it withdraws before it drains), so a stopping worker gets nothing new.
 */
export class LocalRoutes {
  readonly #handlers = new Map<string, LocalHandler[]>();
  #turn = 0;

  /** Serve `subject` here too; the returned function withdraws (call it before draining the subscription). */
  serve(subject: string, handler: LocalHandler): () => void {
    this.#handlers.set(subject, [...(this.#handlers.get(subject) ?? []), handler]);
    return () => {
      const left = (this.#handlers.get(subject) ?? []).filter((h) => h !== handler);
      if (left.length > 0) this.#handlers.set(subject, left);
      else this.#handlers.delete(subject);
    };
  }

  /** A handler of `subject` in this process (taking turns when there are several), or undefined. */
  handlerOf(subject: string): LocalHandler | undefined {
    const handlers = this.#handlers.get(subject);
    if (!handlers) return undefined;
    return handlers.length === 1 ? handlers[0] : handlers[this.#turn++ % handlers.length];
  }
}

/**
 * A request delivered in-process: what a handler reads of a NATS message, and a `respond` that hands
 * the answer back to the sender without the server.
 */
export class LocalMsg implements Msg {
  readonly sid = -1;
  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    readonly headers: MsgHdrs | undefined,
    readonly reply: string,
    private readonly answer: (data: Uint8Array, headers: MsgHdrs | undefined) => void,
  ) {}

  respond(payload: Payload = new Uint8Array(), opts?: PublishOptions): boolean {
    this.answer(typeof payload === "string" ? new TextEncoder().encode(payload) : payload, opts?.headers);
    return true;
  }

  json<T>(): T {
    return JSON.parse(this.string()) as T;
  }

  string(): string {
    return new TextDecoder().decode(this.data);
  }
}
