import { describe, expect, it } from "vitest";
import { isSafeToRepeat } from "./policy.js";

describe("isSafeToRepeat", () => {
  const tool = (annotations?: Record<string, boolean>) => ({ name: "t", inputSchema: { type: "object" as const }, ...(annotations ? { annotations } : {}) });
  it("follows the annotations, and config overrides them either way", () => {
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ idempotentHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ destructiveHint: true }), undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), undefined)).toBe(false);
    expect(isSafeToRepeat(undefined, undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), { idempotent: true })).toBe(true);
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), { readOnly: false })).toBe(false);
  });
});
