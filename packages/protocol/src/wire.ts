import type { z } from "zod";
import { type ErrorCode, isRetryableCode } from "./errors.js";
import { ErrorCode as Codes } from "./errors.js";
import {
  ToolCallRequestSchema,
  ToolsListRequestSchema,
  fastToolCallRequest,
  type ErrorReply,
  type ToolsListRequest,
  type ValidationIssue,
  type WireError,
} from "./schemas.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encode a message body. */
export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Build an error reply; `retryable` defaults from the code. */
export function errorReply(
  code: ErrorCode,
  message: string,
  extra: { retryable?: boolean; retryAfterMs?: number; details?: Record<string, unknown> } = {},
): ErrorReply {
  const error: WireError = { code, message, retryable: extra.retryable ?? isRetryableCode(code) };
  if (extra.retryAfterMs !== undefined) error.retryAfterMs = Math.max(0, Math.ceil(extra.retryAfterMs));
  if (extra.details !== undefined) error.details = extra.details;
  return { ok: false, error };
}

/** Turn zod issues into field-level validation issues (`arguments.count`, `backend`, ...). */
export function issuesFromZod(issues: readonly z.core.$ZodIssue[]): ValidationIssue[] {
  return issues.map((issue) => ({
    field: issue.path.length === 0 ? "(body)" : issue.path.map(String).join("."),
    message: issue.message,
    type: issue.code,
  }));
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reply: ErrorReply };

/**
 * Decode and validate a request body: over `maxBytes` → PAYLOAD_TOO_LARGE, not JSON → BAD_REQUEST,
 * wrong shape → BAD_REQUEST with every field named in `details.validationErrors`.
 */
export function decodeRequest<S extends z.ZodType>(data: Uint8Array, schema: S, maxBytes: number): Decoded<z.infer<S>> {
  if (data.length > maxBytes) {
    return {
      ok: false,
      reply: errorReply(Codes.PAYLOAD_TOO_LARGE, `request body is ${data.length} bytes, above the limit of ${maxBytes}`, {
        details: { sizeBytes: data.length, limitBytes: maxBytes },
      }),
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(data));
  } catch (err) {
    return { ok: false, reply: errorReply(Codes.BAD_REQUEST, `request body is not valid JSON: ${(err as Error).message}`) };
  }
  const fast = schema === (ToolCallRequestSchema as z.ZodType) ? fastToolCallRequest(raw) : undefined;
  if (fast !== undefined) return { ok: true, value: fast as z.infer<S> };
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const validationErrors = issuesFromZod(parsed.error.issues);
    const summary = validationErrors.map((i) => `${i.field}: ${i.message}`).join("; ");
    return { ok: false, reply: errorReply(Codes.BAD_REQUEST, `request body is malformed: ${summary}`, { details: { validationErrors } }) };
  }
  return { ok: true, value: parsed.data };
}

/**
 * Parse a message anyone may have published (an event): undefined when it is not JSON. A throw inside
 * a NATS subscription callback would stop the connection reading, so events are never parsed bare.
 */
export function parseJsonOrUndefined(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
}

/** Parse a reply body that is trusted to be JSON (it came from a toolbus worker). */
export function decodeJson(data: Uint8Array): unknown {
  return JSON.parse(decoder.decode(data));
}

/** Decode a tools-list request; an empty body means "every backend". */
export function decodeToolsListRequest(data: Uint8Array, maxBytes: number): Decoded<ToolsListRequest> {
  return data.length === 0 ? { ok: true, value: {} } : decodeRequest(data, ToolsListRequestSchema, maxBytes);
}
