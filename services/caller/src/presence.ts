import type { NatsConnection, Subscription } from "nats";
import {
  CancelRequestSchema,
  EndpointMovedSchema,
  HealthEventSchema,
  decodeRequest,
  parseJsonOrUndefined,
  encodeJson,
  subjects,
  type CallerHeartbeat,
  type CallerStatus,
  type CancelRequest,
  type EndpointMoved,
  type HealthEvent,
} from "@toolbus/protocol";

export interface PresenceOptions {
  backend: string;
  heartbeatMs: number;
  maxRequestBytes: number;
  /** What this caller says of itself: in heartbeats and to a discovering router ... */
  heartbeat(status: CallerHeartbeat["status"]): CallerHeartbeat;
  /** ... and to `toolbus status`. */
  status(): CallerStatus;
  /** A client gave up on a call (maybe one of ours). */
  onCancel(request: CancelRequest): void;
  /** More subjects cancels come on, beside `toolbus.v1.cancel.<backend>` (an LLM caller's `toolbus.v1.llm.cancel`). */
  moreCancelSubjects?: readonly string[];
  /** The health prober's word on one of this backend's endpoints (a change, or a heartbeat). */
  onHealth(event: HealthEvent): void;
  /** The prober found an endpoint's server on another port. */
  onMoved(event: EndpointMoved): void;
}

/**
 * How a caller makes itself known, apart from serving calls: a heartbeat every `heartbeatMs` (the
 * router forwards only to backends with a live caller), an answer to every starting router's
 * discovery and to `toolbus status`, and an ear for clients' cancels. None of these use a queue
 * group: every replica answers, and the one holding a cancelled call acts on it.
 */
export class Presence {
  readonly #subscriptions: Subscription[];
  readonly #cancels: Subscription[];
  #timer: NodeJS.Timeout | undefined;
  #down = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: PresenceOptions,
  ) {
    const answer = (body: () => unknown) => (_err: unknown, msg: { respond(data: Uint8Array): boolean }) => void msg.respond(encodeJson(body()));
    this.#subscriptions = [
      nc.subscribe(subjects.callerDiscovery(), { callback: answer(() => options.heartbeat("up")) }),
      nc.subscribe(subjects.callerStatus(), { callback: answer(() => options.status()) }),
      nc.subscribe(subjects.endpointEvents(options.backend), {
        callback: (_err, msg) => {
          const parsed = EndpointMovedSchema.safeParse(parseJsonOrUndefined(msg.data));
          if (parsed.success) guarded(() => options.onMoved(parsed.data));
        },
      }),
      nc.subscribe(subjects.healthEvents(options.backend), {
        callback: (_err, msg) => {
          const parsed = HealthEventSchema.safeParse(parseJsonOrUndefined(msg.data));
          if (parsed.success) guarded(() => options.onHealth(parsed.data));
        },
      }),
    ];
    this.#cancels = [subjects.cancelCall(options.backend), ...(options.moreCancelSubjects ?? [])].map((subject) =>
      nc.subscribe(subject, {
        callback: (_err, msg) => {
          const decoded = decodeRequest(msg.data, CancelRequestSchema, options.maxRequestBytes);
          if (decoded.ok) options.onCancel(decoded.value);
        },
      }),
    );
  }

  /** Start the heartbeat, once the server has our subscriptions (so a router never forwards into the void). */
  async start(): Promise<void> {
    await this.nc.flush();
    this.announce();
    this.#timer = setInterval(() => this.announce(), this.options.heartbeatMs);
    this.#timer.unref();
  }

  /** Send a heartbeat now (e.g. the tool list changed). */
  announce(): void {
    // Once it has said "down", a stopping caller must not come back (e.g. on a tools change).
    if (this.#down) return;
    this.#publish("up");
  }

  /** Stop hearing cancels: after the calls still out have been drained (a client may give up on one meanwhile). */
  stopCancels(): void {
    for (const sub of this.#cancels) sub.unsubscribe();
  }

  /** Say "down" and go quiet (cancels are still heard until `stopCancels`). */
  stop(): void {
    clearInterval(this.#timer);
    for (const sub of this.#subscriptions) sub.unsubscribe();
    this.#down = true;
    this.#publish("down");
  }

  #publish(status: CallerHeartbeat["status"]): void {
    if (!this.nc.isClosed()) this.nc.publish(subjects.callerHeartbeat(this.options.backend), encodeJson(this.options.heartbeat(status)));
  }
}

/** Run an event's handler; a throw must not reach nats.js, whose read loop it would end. */
function guarded(handle: () => void): void {
  try {
    handle();
  } catch (err) {
    process.emitWarning(`toolbus: an event handler failed: ${(err as Error).message}`);
  }
}
