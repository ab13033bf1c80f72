import { ErrorCode } from "@toolbus/protocol";

/** Exit codes scripts can rely on. */
export const ExitCode = {
  OK: 0,
  /** The tool ran and reported an error (`isError: true`). */
  TOOL_ERROR: 1,
  /** Bad command line or configuration. */
  USAGE: 2,
  /** The request was refused as wrong: bad arguments, unknown backend or tool, too large. */
  REJECTED: 3,
  /** The call could not be served now: deadline, backend down, overloaded; retrying may help. */
  FAILED: 4,
  /** NATS could not be reached. */
  NO_NATS: 5,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const REJECTED_CODES: ReadonlySet<string> = new Set([
  ErrorCode.BAD_REQUEST,
  ErrorCode.VALIDATION_FAILED,
  ErrorCode.UNKNOWN_BACKEND,
  ErrorCode.UNKNOWN_TOOL,
  ErrorCode.PAYLOAD_TOO_LARGE,
]);

export function exitCodeFor(code: string): ExitCode {
  return REJECTED_CODES.has(code) ? ExitCode.REJECTED : ExitCode.FAILED;
}
