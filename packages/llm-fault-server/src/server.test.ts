import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CANNED_TEXT, startLlmFaultServer, type LlmFaultServer } from "./server.js";

/**
 * The fault servers are only useful if they speak the real wire formats: the official clients are the
 * judges here (no retries, so each fault shows as the client reports it).
 */
describe("the LLM fault server, called with the official openai and @anthropic-ai/sdk clients", () => {
  let server: LlmFaultServer;
  let openai: OpenAI;
  let anthropic: Anthropic;
  const weather = {
    name: "get_weather",
    description: "Weather of a city",
    schema: { type: "object" as const, properties: { city: { type: "string" } }, required: ["city"] },
  };

  beforeAll(async () => {
    server = await startLlmFaultServer();
    openai = new OpenAI({ apiKey: server.apiKey, baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 5_000 });
    anthropic = new Anthropic({ apiKey: server.apiKey, baseURL: server.url, maxRetries: 0, timeout: 5_000 });
  });
  afterAll(async () => {
    await server?.close();
  });

  const user = [{ role: "user" as const, content: "Hi" }];

  it("OpenAI: a completion, a stream (with usage), and a tool call, streamed or not", async () => {
    const done = await openai.chat.completions.create({ model: "m", messages: user });
    expect(done.choices[0]!.message.content).toBe(CANNED_TEXT);
    expect(done.usage!.completion_tokens).toBeGreaterThan(0);
    const stream = await openai.chat.completions.create({ model: "m", messages: user, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: unknown;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(CANNED_TEXT);
    expect(usage).toMatchObject({ prompt_tokens: expect.any(Number) });
    const tools = [{ type: "function" as const, function: { name: weather.name, description: weather.description, parameters: weather.schema } }];
    const call = await openai.chat.completions.create({ model: "m", messages: user, tools }, { headers: { "X-Fault": "tool-call" } });
    expect(call.choices[0]!.finish_reason).toBe("tool_calls");
    expect(call.choices[0]!.message.tool_calls![0]).toMatchObject({ type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } });
    const streamedCall = openai.chat.completions.stream({ model: "m", messages: user, tools }, { headers: { "X-Fault": "tool-call" } });
    const final = await streamedCall.finalChatCompletion();
    expect(final.choices[0]!.message.tool_calls![0]!.function).toMatchObject({ name: "get_weather", arguments: '{"city":"Paris"}' });
  });

  it("Anthropic: a message, a stream, and a tool use, streamed or not", async () => {
    const done = await anthropic.messages.create({ model: "m", max_tokens: 100, messages: user });
    expect(done.content).toEqual([{ type: "text", text: CANNED_TEXT }]);
    expect(done.stop_reason).toBe("end_turn");
    const stream = anthropic.messages.stream({ model: "m", max_tokens: 100, messages: user });
    let text = "";
    stream.on("text", (t) => (text += t));
    const final = await stream.finalMessage();
    expect(text).toBe(CANNED_TEXT);
    expect(final.usage.output_tokens).toBeGreaterThan(0);
    const tools = [{ name: weather.name, description: weather.description, input_schema: weather.schema }];
    const use = await anthropic.messages.create({ model: "m", max_tokens: 100, messages: user, tools }, { headers: { "X-Fault": "tool-call" } });
    expect(use.stop_reason).toBe("tool_use");
    expect(use.content[0]).toMatchObject({ type: "tool_use", name: "get_weather", input: { city: "Paris" } });
    const streamedUse = await anthropic.messages
      .stream({ model: "m", max_tokens: 100, messages: user, tools }, { headers: { "X-Fault": "tool-call" } })
      .finalMessage();
    expect(streamedUse.content[0]).toMatchObject({ type: "tool_use", input: { city: "Paris" } });
  });

  it("faults reach the clients as the real services' would: 429 with Retry-After, 503, 500, a wrong key", async () => {
    const limited = await openai.chat.completions
      .create({ model: "m", messages: user }, { headers: { "X-Fault": "status=429;retry-after=2" } })
      .catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect((limited as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after")).toBe("2");
    expect(
      await openai.chat.completions.create({ model: "m", messages: user }, { headers: { "X-Fault": "status=500" } }).catch((e: unknown) => e),
    ).toBeInstanceOf(OpenAI.InternalServerError);
    const overloaded = await anthropic.messages
      .create({ model: "m", max_tokens: 10, messages: user }, { headers: { "X-Fault": "status=503" } })
      .catch((e: unknown) => e);
    expect(overloaded).toBeInstanceOf(Anthropic.InternalServerError);
    const wrongKey = new OpenAI({ apiKey: "sk-wrong", baseURL: `${server.url}/v1`, maxRetries: 0 });
    expect(await wrongKey.chat.completions.create({ model: "m", messages: user }).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("a reset connection, malformed SSE, a slow first token, and a stalled stream the client gives up on", async () => {
    expect(await openai.chat.completions.create({ model: "m", messages: user }, { headers: { "X-Fault": "reset" } }).catch((e: unknown) => e)).toBeInstanceOf(
      OpenAI.APIConnectionError,
    );
    const malformed = async () => {
      const s = await openai.chat.completions.create({ model: "m", messages: user, stream: true }, { headers: { "X-Fault": "malformed-sse" } });
      for await (const _ of s) {
        // reading
      }
    };
    await expect(malformed()).rejects.toThrow();
    const started = Date.now();
    await openai.chat.completions.create({ model: "m", messages: user }, { headers: { "X-Fault": "slow-first-token=300" } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    const before = server.stats.abortedByClient;
    const controller = new AbortController();
    const stalled = await openai.chat.completions.create(
      { model: "m", messages: user, stream: true },
      { headers: { "X-Fault": "stall-after=2" }, signal: controller.signal },
    );
    // The client stops reading after two chunks (the SDK ends the iteration quietly on abort).
    let n = 0;
    await (async () => {
      for await (const _ of stalled) if (++n === 2) controller.abort();
    })().catch(() => undefined);
    expect(n).toBe(2);
    // The server sees the client leave.
    await expect.poll(() => server.stats.abortedByClient, { timeout: 2_000 }).toBe(before + 1);
  });
});
