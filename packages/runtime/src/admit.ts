import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection } from "nats";
import type { z } from "zod";
import { Headers, decodeRequest, encodeJson, errorReply, ErrorCode, readBudget, type ErrorReply } from "@toolbus/protocol";

export interface Admitted<T> {
  ok: true;
  body: T;
  /** Local monotonic deadline. */
  deadline: number;
  requestId: string;
}

export interface AdmitLimits {
  maxRequestBytes: number;
  maxBudgetMs: number;
}

/**
 * The checks every worker makes before doing anything with a request, cheapest first: budget header,
 * size, JSON, schema. The request id is taken from the header (or made up) so every log line has one.
 */
export function admitRequest<S extends z.ZodType>(
  msg: Msg,
  schema: S,
  limits: AdmitLimits,
  now: number,
): Admitted<z.infer<S>> | { ok: false; reply: ErrorReply; requestId: string } {
  const requestId = msg.headers?.get(Headers.RequestId) || randomUUID();
  const budget = readBudget(msg.headers?.get(Headers.TimeoutMs), now, limits.maxBudgetMs);
  if (!budget.ok) return { ok: false, reply: errorReply(budget.code, budget.message), requestId };
  const decoded = decodeRequest(msg.data, schema, limits.maxRequestBytes);
  if (!decoded.ok) return { ok: false, reply: decoded.reply, requestId };
  return { ok: true, body: decoded.value, deadline: budget.deadline, requestId };
}

/**
 * Send a reply, unless it is larger than the NATS server accepts: then say so instead of failing
 * silently (the client would only see its deadline pass). Returns false when there is no reply subject.
 */
export function respondJson(msg: Msg, reply: unknown, maxPayload: number): boolean {
  if (!msg.reply) return false;
  let data = encodeJson(reply);
  if (data.length > maxPayload) {
    data = encodeJson(
      errorReply(ErrorCode.PAYLOAD_TOO_LARGE, `the reply is ${data.length} bytes, above the NATS max_payload of ${maxPayload}`, {
        details: { sizeBytes: data.length, limitBytes: maxPayload },
      }),
    );
  }
  return msg.respond(data);
}

/** The largest message the connected NATS server accepts (1 MiB until it has said). */
export function maxPayloadOf(nc: NatsConnection): number {
  return nc.info?.max_payload ?? 1024 * 1024;
}

/**
 * A handler failed with a bug: answer INTERNAL so the client is not left waiting for its deadline.
 * Never throws (the connection may be closed or draining, and then nobody can be told).
 */
export function answerInternal(msg: Msg, worker: string, err: unknown, maxPayload: number): void {
  try {
    respondJson(msg, errorReply(ErrorCode.INTERNAL, `${worker} failure: ${err instanceof Error ? err.message : String(err)}`), maxPayload);
  } catch {
    // nobody to tell
  }
}
