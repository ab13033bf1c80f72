import { describe, expect, it } from "vitest";
import { LlmChatRequestSchema, type LlmChatRequestInput } from "@toolbus/protocol";
import { retryAfterMs } from "./endpoint.js";
import { complexityOf } from "./policy.js";
import { anthropic, estimateTokens, isProviderProtocolError, openai, type SseEvent } from "./providers.js";

const request = (input: Partial<LlmChatRequestInput> = {}) =>
  LlmChatRequestSchema.parse({ backend: "b", messages: [{ role: "user", content: "hi" }], ...input } satisfies LlmChatRequestInput);

/** A whole conversation with a tool round trip, in toolbus's shape. */
const conversation = request({
  messages: [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "get_weather", arguments: { city: "Paris" } }] },
    { role: "tool", toolCallId: "c1", content: "sunny" },
    { role: "user", content: "And tomorrow?" },
  ],
  tools: [{ name: "get_weather", description: "weather", parameters: { type: "object" } }],
  toolChoice: { name: "get_weather" },
  maxTokens: 50,
  temperature: 1.5,
});

describe("OpenAI-compatible translation", () => {
  it("writes messages, tool calls, tool results, tools and tool choice in OpenAI's format", () => {
    const body = openai.body(conversation, "gpt-x", true) as Record<string, unknown>;
    expect(body).toMatchObject({
      model: "gpt-x",
      max_tokens: 50,
      temperature: 1.5,
      stream: true,
      stream_options: { include_usage: true },
      tool_choice: { type: "function", function: { name: "get_weather" } },
      tools: [{ type: "function", function: { name: "get_weather", description: "weather", parameters: { type: "object" } } }],
    });
    expect(body.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }] },
      { role: "tool", tool_call_id: "c1", content: "sunny" },
      { role: "user", content: "And tomorrow?" },
    ]);
    expect(openai.body(request(), "m", false)).not.toHaveProperty("stream");
  });

  it("reads an answer: text, tool calls (broken JSON arguments kept raw), stop reasons, usage", () => {
    const parsed = openai.parse({
      model: "gpt-x",
      choices: [
        {
          message: {
            content: null,
            tool_calls: [
              { id: "a", function: { name: "f", arguments: '{"x":1}' } },
              { id: "b", function: { name: "g", arguments: "{broken" } },
            ],
          },
          finish_reason: "tool_calls",
        },
      ],
      usage: { prompt_tokens: 10, completion_tokens: 3 },
    });
    expect(parsed).toEqual({
      model: "gpt-x",
      content: "",
      toolCalls: [
        { id: "a", name: "f", arguments: { x: 1 } },
        { id: "b", name: "g", arguments: { _raw: "{broken" } },
      ],
      stopReason: "tool_calls",
      usage: { inputTokens: 10, outputTokens: 3 },
    });
    expect(openai.parse({ choices: [{ message: { content: "t" }, finish_reason: "length" }] }).stopReason).toBe("max_tokens");
    for (const bad of [null, "text", {}, { choices: [] }, { choices: [{}] }]) expect(() => openai.parse(bad)).toThrow(/not an object|no choices/);
  });

  it("reads a stream: text and tool-call pieces as deltas, usage from the last chunk, done at [DONE]", () => {
    const t = openai.stream("asked");
    const ev = (data: unknown): SseEvent => ({ data: typeof data === "string" ? data : JSON.stringify(data) });
    expect(t.push(ev({ model: "served", choices: [{ delta: { role: "assistant", content: "" } }] })).deltas).toEqual([]);
    expect(t.push(ev({ choices: [{ delta: { content: "Hel" } }] })).deltas).toEqual([{ content: "Hel" }]);
    expect(t.push(ev({ choices: [{ delta: { content: "lo" } }] })).deltas).toEqual([{ content: "lo" }]);
    t.push(ev({ choices: [{ delta: { tool_calls: [{ index: 0, id: "c", function: { name: "f", arguments: "" } }] } }] }));
    expect(t.push(ev({ choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: '{"a":' } }] } }] })).deltas).toEqual([
      { toolCall: { index: 0, arguments: '{"a":' } },
    ]);
    t.push(ev({ choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: "2}" } }] } }] }));
    t.push(ev({ choices: [{ delta: {}, finish_reason: "tool_calls" }] }));
    t.push(ev({ choices: [], usage: { prompt_tokens: 7, completion_tokens: 4 } }));
    expect(t.push(ev("[DONE]")).done).toBe(true);
    expect(t.completion()).toEqual({
      model: "served",
      content: "Hello",
      toolCalls: [{ id: "c", name: "f", arguments: { a: 2 } }],
      stopReason: "tool_calls",
      usage: { inputTokens: 7, outputTokens: 4 },
    });
    expect(() => openai.stream("m").push(ev("{not json"))).toThrow(/malformed stream event/);
    expect(() => openai.stream("m").push(ev({ error: { message: "overloaded" } }))).toThrow(/overloaded/);
  });
});

describe("Anthropic translation", () => {
  it("moves system messages to `system`, tool results into user turns, merges turns of one role, caps temperature at 1", () => {
    const body = anthropic.body(conversation, "claude-x", false) as Record<string, unknown>;
    expect(body).toMatchObject({
      model: "claude-x",
      system: "Be brief.",
      max_tokens: 50,
      temperature: 1,
      tool_choice: { type: "tool", name: "get_weather" },
      tools: [{ name: "get_weather", description: "weather", input_schema: { type: "object" } }],
    });
    expect(body.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "Weather in Paris?" }] },
      { role: "assistant", content: [{ type: "tool_use", id: "c1", name: "get_weather", input: { city: "Paris" } }] },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "c1", content: "sunny" },
          { type: "text", text: "And tomorrow?" },
        ],
      },
    ]);
    // max_tokens is required by Anthropic; "required" is its "any".
    expect(anthropic.body(request({ toolChoice: "required" }), "m", true)).toMatchObject({ max_tokens: 4096, stream: true, tool_choice: { type: "any" } });
  });

  it("reads an answer and a stream the same way", () => {
    const whole = anthropic.parse({
      model: "claude-x",
      content: [
        { type: "text", text: "Let me check." },
        { type: "tool_use", id: "t1", name: "get_weather", input: { city: "Paris" } },
      ],
      stop_reason: "tool_use",
      usage: { input_tokens: 12, output_tokens: 8 },
    });
    expect(whole).toEqual({
      model: "claude-x",
      content: "Let me check.",
      toolCalls: [{ id: "t1", name: "get_weather", arguments: { city: "Paris" } }],
      stopReason: "tool_calls",
      usage: { inputTokens: 12, outputTokens: 8 },
    });
    const t = anthropic.stream("asked");
    const ev = (type: string, data: Record<string, unknown>): SseEvent => ({ event: type, data: JSON.stringify({ type, ...data }) });
    t.push(ev("message_start", { message: { model: "claude-x", usage: { input_tokens: 12, output_tokens: 1 } } }));
    t.push(ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }));
    expect(t.push(ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: "Let me check." } })).deltas).toEqual([
      { content: "Let me check." },
    ]);
    t.push(ev("content_block_stop", { index: 0 }));
    // Block 1 is the first tool call: index 0 among tool calls.
    expect(t.push(ev("content_block_start", { index: 1, content_block: { type: "tool_use", id: "t1", name: "get_weather", input: {} } })).deltas).toEqual([
      { toolCall: { index: 0, id: "t1", name: "get_weather" } },
    ]);
    t.push(ev("content_block_delta", { index: 1, delta: { type: "input_json_delta", partial_json: '{"city":' } }));
    t.push(ev("content_block_delta", { index: 1, delta: { type: "input_json_delta", partial_json: '"Paris"}' } }));
    t.push(ev("message_delta", { delta: { stop_reason: "tool_use" }, usage: { output_tokens: 8 } }));
    expect(t.push(ev("message_stop", {})).done).toBe(true);
    expect(t.completion()).toEqual(whole);
    expect(() => anthropic.stream("m").push(ev("error", { error: { type: "overloaded_error" } }))).toThrow(/overloaded_error/);
    const err = (() => {
      try {
        anthropic.parse({ content: "nope" });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isProviderProtocolError(err)).toBe(true);
  });
});

describe("what real servers send that ours does not", () => {
  it("Anthropic: empty text blocks and empty turns are left out (it refuses them)", () => {
    const body = anthropic.body(
      request({
        messages: [
          { role: "user", content: "" },
          { role: "assistant", content: null },
          { role: "user", content: "hi" },
        ],
      }),
      "m",
      false,
    ) as { messages: unknown[] };
    expect(body.messages).toEqual([{ role: "user", content: [{ type: "text", text: "hi" }] }]);
  });
  it("OpenAI streams without tool-call indexes: a piece with an id starts the next call, one without continues it", () => {
    const t = openai.stream("m");
    const ev = (data: unknown): SseEvent => ({ data: JSON.stringify(data) });
    t.push(ev({ choices: [{ delta: { tool_calls: [{ id: "a", function: { name: "f", arguments: '{"x":' } }] } }] }));
    t.push(ev({ choices: [{ delta: { tool_calls: [{ function: { arguments: "1}" } }] } }] }));
    t.push(ev({ choices: [{ delta: { tool_calls: [{ id: "b", function: { name: "g", arguments: "{}" } }] } }] }));
    t.push(ev({ choices: [{ delta: {}, finish_reason: "tool_calls" }] }));
    // No [DONE]: the finish reason is enough.
    expect(t.finished()).toBe(true);
    expect(t.completion().toolCalls).toEqual([
      { id: "a", name: "f", arguments: { x: 1 } },
      { id: "b", name: "g", arguments: {} },
    ]);
  });
  it("tool calls without an id or a name get a default one (the reply schema needs both)", () => {
    expect(openai.parse({ choices: [{ message: { tool_calls: [{ function: { arguments: "{}" } }] }, finish_reason: "tool_calls" }] }).toolCalls).toEqual([
      { id: "call_0", name: "unknown", arguments: {} },
    ]);
  });
});

describe("Retry-After and friends", () => {
  const now = Date.parse("2026-11-22T10:00:00Z");
  it("reads retry-after-ms, Retry-After in seconds or as a date, and the latest rate-limit reset", () => {
    expect(retryAfterMs({ "retry-after-ms": "1500.2", "retry-after": "9" }, now)).toBe(1501);
    expect(retryAfterMs({ "retry-after": "2" }, now)).toBe(2000);
    expect(retryAfterMs({ "retry-after": "Sun, 22 Nov 2026 10:00:03 GMT" }, now)).toBe(3000);
    // A reset says when a limit is whole again: the exhausted one decides; without word of which, the soonest.
    expect(retryAfterMs({ "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s" }, now)).toBe(1000);
    expect(
      retryAfterMs(
        { "x-ratelimit-reset-requests": "1s", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "0" },
        now,
      ),
    ).toBe(360_000);
    // Not a 429 (a 503, say): only an explicit Retry-After counts.
    expect(retryAfterMs({ "x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "0" }, now, false)).toBeUndefined();
    expect(retryAfterMs({ "retry-after": "3" }, now, false)).toBe(3000);
    expect(retryAfterMs({ "x-ratelimit-reset-tokens": "250ms" }, now)).toBe(250);
    expect(retryAfterMs({ "x-ratelimit-reset-tokens": "1m2.5s" }, now)).toBe(62_500);
    expect(retryAfterMs({ "anthropic-ratelimit-requests-reset": "2026-11-22T10:00:05Z", "anthropic-ratelimit-requests-remaining": "0" }, now)).toBe(5000);
    expect(retryAfterMs({ "retry-after": "soon" }, now)).toBeUndefined();
    expect(retryAfterMs({ "x-ratelimit-reset-tokens": "later" }, now)).toBeUndefined();
    expect(retryAfterMs({}, now)).toBeUndefined();
  });
});

describe("complexity and the token estimate", () => {
  const rule = { promptChars: 100, maxTokens: 500 };
  it("is complex for intent analysis, a large maxTokens or a long prompt", () => {
    expect(complexityOf(request(), rule)).toBe("simple");
    expect(complexityOf(request({ intent: "analysis" }), rule)).toBe("complex");
    expect(complexityOf(request({ maxTokens: 501 }), rule)).toBe("complex");
    expect(complexityOf(request({ messages: [{ role: "user", content: "x".repeat(101) }] }), rule)).toBe("complex");
  });
  it("estimates a quarter token per prompt character, plus maxTokens", () => {
    expect(estimateTokens(request({ messages: [{ role: "user", content: "x".repeat(800) }], maxTokens: 100 }))).toBe(300);
  });
});
