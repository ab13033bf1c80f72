import { z } from "zod";

const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse "250ms", "5s", "1.5m", "2h" or a bare number of ms; undefined when it is none of those. */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === "number") return Number.isFinite(input) && input >= 0 ? input : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input);
  if (!match) return undefined;
  const value = Number(match[1]) * (UNITS_MS[match[2] ?? "ms"] ?? 1);
  return Math.round(value);
}

/** ms as the largest unit that divides it evenly ("100ms", "1s", "2m", "24h"): readable, and parseDuration reads it back. */
export function formatDuration(ms: number): string {
  for (const unit of ["h", "m", "s"] as const) {
    const size = UNITS_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A duration field: "5s" or a number of ms, compiled to ms. */
export const DurationSchema = z.union([z.number(), z.string()]).transform((input, ctx) => {
  const ms = parseDuration(input);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: `not a duration: ${JSON.stringify(input)} (use e.g. 250ms, 5s, 2m, or a number of ms)` });
    return z.NEVER;
  }
  return ms;
});

/** Inclusive bounds of a duration field, in ms. */
export interface DurationBounds {
  readonly min: number;
  readonly max: number;
}

/** A duration field that must lie within `bounds`; the message names the bound it crossed ("must be at least 100ms"). */
export function duration(bounds: DurationBounds) {
  return DurationSchema.superRefine((ms, ctx) => {
    if (ms < bounds.min) ctx.addIssue({ code: "custom", message: `must be at least ${formatDuration(bounds.min)}` });
    else if (ms > bounds.max) ctx.addIssue({ code: "custom", message: `must be at most ${formatDuration(bounds.max)}` });
  });
}
