import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  ErrorCode,
  ToolCallRequestSchema,
  canonicalJson,
  decodeRequest,
  fastToolCallRequest,
  readBudget,
  stampBudget,
  subjects,
  queueGroups,
  errorReply,
} from "./index.js";

describe("subjects", () => {
  it("are versioned, lowercase and built only from valid backend names", () => {
    expect(subjects.toolCall()).toBe("toolbus.v1.tool.call");
    expect(subjects.backendCall("files_2")).toBe("toolbus.v1.backend.files_2.call");
    expect(queueGroups.caller("files")).toBe("caller.files");
    for (const bad of ["Files", "a.b", "*", ">", "", "-x", "a b"]) expect(() => subjects.backendCall(bad)).toThrow(/invalid backend name/);
  });
});

describe("budgets", () => {
  it("turn a header into a local deadline and re-stamp what is left", () => {
    const reading = readBudget("1500", 1_000);
    expect(reading).toEqual({ ok: true, deadline: 2_500, budgetMs: 1_500 });
    expect(stampBudget(2_500, 2_000, 1)).toBe("499");
    expect(stampBudget(2_500, 3_000, 1)).toBe("0");
  });
  it.each([
    [undefined, ErrorCode.BAD_REQUEST],
    ["", ErrorCode.BAD_REQUEST],
    ["abc", ErrorCode.BAD_REQUEST],
    ["1e3", ErrorCode.BAD_REQUEST],
    ["-1", ErrorCode.BAD_REQUEST],
    ["0", ErrorCode.DEADLINE_EXCEEDED],
    ["86400000", ErrorCode.BAD_REQUEST],
  ])("refuse %j with %s", (value, code) => {
    const reading = readBudget(value, 0);
    expect(reading.ok).toBe(false);
    if (!reading.ok) expect(reading.code).toBe(code);
  });
});

describe("canonical JSON", () => {
  it("is the same for equal values whatever the key order", () => {
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }], u: undefined })).toBe('{"a":[{"c":2,"d":1}],"b":1}');
    expect(canonicalJson({ a: 1, b: 2 })).toBe(canonicalJson({ b: 2, a: 1 }));
  });
});

describe("decodeRequest", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  it("accepts a good call and defaults arguments", () => {
    const decoded = decodeRequest(enc('{"backend":"x","tool":"t"}'), ToolCallRequestSchema, 1024);
    expect(decoded).toEqual({ ok: true, value: { backend: "x", tool: "t", arguments: {} } });
  });
  it("checks size before parsing, then JSON, then shape", () => {
    const tooBig = decodeRequest(enc("x".repeat(2000)), ToolCallRequestSchema, 1024);
    expect(!tooBig.ok && tooBig.reply.error.code).toBe(ErrorCode.PAYLOAD_TOO_LARGE);
    const notJson = decodeRequest(enc("{"), ToolCallRequestSchema, 1024);
    expect(!notJson.ok && notJson.reply.error.code).toBe(ErrorCode.BAD_REQUEST);
    const wrong = decodeRequest(enc('{"backend":1,"arguments":[]}'), ToolCallRequestSchema, 1024);
    expect(!wrong.ok && wrong.reply.error.details?.validationErrors).toEqual([
      expect.objectContaining({ field: "backend" }),
      expect.objectContaining({ field: "tool" }),
      expect.objectContaining({ field: "arguments" }),
    ]);
  });
});

describe("errorReply", () => {
  it("sets retryable from the code unless told otherwise", () => {
    expect(errorReply(ErrorCode.BACKEND_UNAVAILABLE, "down").error.retryable).toBe(true);
    expect(errorReply(ErrorCode.VALIDATION_FAILED, "bad").error.retryable).toBe(false);
    expect(errorReply(ErrorCode.RATE_LIMITED, "slow down", { retryAfterMs: 12.2 }).error.retryAfterMs).toBe(13);
  });
});

describe("fastToolCallRequest", () => {
  it("gives exactly what zod gives, or leaves the request to zod (random requests, valid and not)", async () => {
    const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
    const request = fc.record(
      {
        backend: fc.oneof(fc.constantFrom("everything", "fs_2", "a-b"), fc.string({ maxLength: 70 }), fc.integer()),
        tool: fc.oneof(fc.constantFrom("echo", "get-sum"), fc.string({ maxLength: 300 }), fc.constant(null)),
        arguments: maybe(fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.array(fc.integer()), fc.constant(null), fc.string())),
        conversationId: maybe(fc.oneof(fc.constantFrom("conv-1", "A_b"), fc.string({ maxLength: 120 }))),
        cache: maybe(fc.oneof(fc.constantFrom("default", "bypass"), fc.string())),
        extra: maybe(fc.jsonValue()),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(request, (raw) => {
        // As it arrives: parsed JSON (undefined fields gone).
        const json: unknown = JSON.parse(JSON.stringify(raw));
        const fast = fastToolCallRequest(json);
        const slow = ToolCallRequestSchema.safeParse(json);
        if (fast !== undefined) expect(slow).toEqual({ success: true, data: fast });
        else if (slow.success) throw new Error(`the fast path refused a valid request: ${JSON.stringify(json)}`);
      }),
      { numRuns: 2_000 },
    );
  });
});
