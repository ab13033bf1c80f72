import { ErrorCode } from "./errors.js";
import { Headers } from "./headers.js";

/**
 * Budgets travel between hops as the time left in ms (relative, like gRPC's grpc-timeout). Each hop
 * turns the header into an absolute deadline on its own monotonic clock and, when it forwards, stamps
 * what is left. Monotonic time (`performance.now()`) so a wall-clock jump cannot expire or extend a call.
 */

/** Milliseconds on this process's monotonic clock. */
export function monotonicNow(): number {
  return performance.now();
}

/** A budget above this is treated as a mistake (a unit mix-up), not as "wait an hour". */
export const DEFAULT_MAX_BUDGET_MS = 15 * 60_000;

/** What each forwarding hop keeps back, so the next hop answers before the client gives up. */
export const FORWARD_MARGIN_MS = 1;

export type BudgetReading = { ok: true; deadline: number; budgetMs: number } | { ok: false; code: ErrorCode; message: string };

/**
 * Read a `Toolbus-Timeout-Ms` header value into a local deadline. Missing, malformed, negative or
 * absurdly large budgets are refused with BAD_REQUEST; a budget of 0 means the deadline has already
 * passed (DEADLINE_EXCEEDED).
 */
export function readBudget(value: string | undefined | null, now: number, maxMs = DEFAULT_MAX_BUDGET_MS): BudgetReading {
  if (value === undefined || value === null || value.trim() === "") {
    return { ok: false, code: ErrorCode.BAD_REQUEST, message: `header ${Headers.TimeoutMs} is required (the budget in ms)` };
  }
  const text = value.trim();
  // Integers only: "1e3", "0x10", "12ms" are all rejected rather than guessed at.
  if (!/^-?\d+$/.test(text)) {
    return { ok: false, code: ErrorCode.BAD_REQUEST, message: `header ${Headers.TimeoutMs} must be an integer number of ms, got ${JSON.stringify(value)}` };
  }
  const budgetMs = Number(text);
  if (budgetMs < 0) {
    return { ok: false, code: ErrorCode.BAD_REQUEST, message: `header ${Headers.TimeoutMs} must not be negative, got ${budgetMs}` };
  }
  if (budgetMs === 0) {
    return { ok: false, code: ErrorCode.DEADLINE_EXCEEDED, message: "the request's budget was already spent when it arrived" };
  }
  if (budgetMs > maxMs) {
    return { ok: false, code: ErrorCode.BAD_REQUEST, message: `header ${Headers.TimeoutMs} is ${budgetMs} ms, above the maximum of ${maxMs} ms` };
  }
  return { ok: true, deadline: now + budgetMs, budgetMs };
}

/** Ms left until `deadline` (may be negative). */
export function remainingMs(deadline: number, now = monotonicNow()): number {
  return deadline - now;
}

/** The header value to send onward: what is left minus a margin, floored, never below 0. */
export function stampBudget(deadline: number, now = monotonicNow(), marginMs = FORWARD_MARGIN_MS): string {
  return String(Math.max(0, Math.floor(deadline - now - marginMs)));
}
