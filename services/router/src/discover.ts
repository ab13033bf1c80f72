import { RequestStrategy, type Msg, type NatsConnection } from "nats";
import { encodeJson } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";

/**
 * Ask every running replica of a worker to announce itself on `subject`, and hand each answer that
 * arrives within `maxWaitMs` to `heard`. Nobody answering ("no responders") is normal at start: their
 * heartbeats tell the router later.
 */
export async function discoverAll(nc: NatsConnection, subject: string, maxWaitMs: number, heard: (msg: Msg) => void, log: Logger, what: string): Promise<void> {
  try {
    const replies = await nc.requestMany(subject, encodeJson({}), { strategy: RequestStrategy.Timer, maxWait: maxWaitMs });
    for await (const msg of replies) heard(msg);
  } catch (err) {
    log.debug({ err: (err as Error).message }, `${what} discovery found nothing`);
  }
}
