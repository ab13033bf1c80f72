import { ErrorCode, isRetryableCode, type WireError } from "@toolbus/protocol";

/** A tool call that did not produce a result: the wire error, as an exception with its code. */
export class ToolbusError extends Error {
  override name = "ToolbusError";
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(error: WireError, options?: { cause?: unknown }) {
    super(error.message, options);
    this.code = error.code;
    this.retryable = error.retryable;
    this.retryAfterMs = error.retryAfterMs;
    this.details = error.details;
  }

  /** Build one from a code and message, with `retryable` from the code. */
  static of(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }): ToolbusError {
    return new ToolbusError({ code, message, retryable: isRetryableCode(code), details: options?.details }, options);
  }

  toJSON(): WireError {
    return {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      ...(this.retryAfterMs !== undefined ? { retryAfterMs: this.retryAfterMs } : {}),
      ...(this.details !== undefined ? { details: this.details } : {}),
    };
  }
}

export function isToolbusError(err: unknown): err is ToolbusError {
  return err instanceof Error && err.name === "ToolbusError";
}

export { ErrorCode };
