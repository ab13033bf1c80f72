/**
 * Error codes that cross the wire. A reply with `ok: false` always carries one of these, a human
 * message, and whether retrying the same request later may succeed.
 */
export const ErrorCode = {
  BAD_REQUEST: "BAD_REQUEST",
  VALIDATION_FAILED: "VALIDATION_FAILED",
  UNKNOWN_BACKEND: "UNKNOWN_BACKEND",
  UNKNOWN_TOOL: "UNKNOWN_TOOL",
  DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
  CIRCUIT_OPEN: "CIRCUIT_OPEN",
  RATE_LIMITED: "RATE_LIMITED",
  OVERLOADED: "OVERLOADED",
  BACKEND_UNAVAILABLE: "BACKEND_UNAVAILABLE",
  BACKEND_ERROR: "BACKEND_ERROR",
  PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  CANCELLED: "CANCELLED",
  INTERNAL: "INTERNAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Whether the same request, sent again later, may succeed. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.DEADLINE_EXCEEDED,
  ErrorCode.CIRCUIT_OPEN,
  ErrorCode.RATE_LIMITED,
  ErrorCode.OVERLOADED,
  ErrorCode.BACKEND_UNAVAILABLE,
]);

/** Default for the `retryable` flag of a code. */
export function isRetryableCode(code: ErrorCode): boolean {
  return RETRYABLE.has(code);
}
