import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LLMock } from "@copilotkit/aimock";
import type { LlmDelta } from "@toolbus/client";
import { startStack, type Stack } from "../helpers/toolbus.js";

/**
 * The LLM callers against servers nobody here wrote: CopilotKit's aimock, which mimics the OpenAI and
 * Anthropic APIs (and checks itself daily against the real ones). Its 429s, 500s, malformed answers,
 * cut streams and slow first tokens are its own, not the ones our fault server was written to produce.
 */
describe("LLM backends against aimock (OpenAI and Anthropic mocks we did not write)", () => {
  let mock: LLMock;
  let calm: LLMock;
  let stack: Stack;

  const ask = (content: string) => ({ messages: [{ role: "user" as const, content }] });
  const drain = async (stream: AsyncIterable<LlmDelta>): Promise<LlmDelta[]> => {
    const got: LlmDelta[] = [];
    for await (const d of stream) got.push(d);
    return got;
  };

  beforeAll(async () => {
    mock = new LLMock({ port: 0 });
    mock.onMessage("hello", { content: "Hi there, friend!" });
    mock.onMessage("weather", { toolCalls: [{ name: "get_weather", arguments: '{"city":"Paris"}' }] });
    mock.onMessage("boom", { error: { message: "boom", type: "server_error" }, status: 500 });
    // Its own pace (20 tokens/s), cut 300 ms in: some chunks reach the client, then the connection drops.
    mock.onMessage(
      "cut",
      { content: "one two three four five six seven eight nine ten" },
      { chunkSize: 4, streamingProfile: { tps: 20 }, disconnectAfterMs: 300 },
    );
    mock.onMessage("slow", { content: "eventually" }, { streamingProfile: { ttft: 3_000 } });
    mock.onMessage("garbled", { content: "never seen" }, { chaos: { malformedRate: 1 } });
    await mock.start();
    // The fallback, a second aimock with none of the faults.
    calm = new LLMock({ port: 0 });
    calm.onMessage(/.*/, { content: "calm answer" });
    await calm.start();
    const base = { apiKey: { env: "MOCK_KEY" }, retry: { maxRetries: 1, initialBackoff: "10ms" }, breaker: { volume: 100 } };
    stack = await startStack(
      {
        backends: {
          "mock-oai": { kind: "llm-openai", url: `${mock.url}/v1`, models: ["gpt-mock"], ...base },
          "mock-ant": { kind: "llm-anthropic", url: `${mock.url}/v1`, models: ["claude-mock"], ...base },
          "mock-fb": { kind: "llm-openai", url: `${mock.url}/v1`, models: ["gpt-mock-fb"], fallbacks: ["calm"], ...base },
          "mock-fast": { kind: "llm-openai", url: `${mock.url}/v1`, models: ["gpt-mock-fast"], timeouts: { firstToken: "300ms" }, ...base },
          calm: { kind: "llm-anthropic", url: `${calm.url}/v1`, models: ["claude-calm"], ...base },
        },
      },
      { env: { MOCK_KEY: "sk-mock" } },
    );
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await Promise.all([mock?.stop(), calm?.stop()]);
  });

  it("both kinds, whole and streamed, text and tool calls", async () => {
    const { client } = stack;
    for (const backend of ["mock-oai", "mock-ant"]) {
      const text = await client.chat({ backend, ...ask("hello") }, { timeoutMs: 5_000 });
      expect(text).toMatchObject({ message: { content: "Hi there, friend!", toolCalls: [] }, stopReason: "end", meta: { backend } });
      const stream = client.chatStream({ backend, ...ask("hello") }, { timeoutMs: 5_000 });
      expect((await drain(stream)).map((d) => d.content ?? "").join("")).toBe("Hi there, friend!");
      expect((await stream.result).message.content).toBe("Hi there, friend!");
      const tool = await client.chat({ backend, ...ask("weather"), tools: [{ name: "get_weather", parameters: { type: "object" } }] }, { timeoutMs: 5_000 });
      expect(tool).toMatchObject({ stopReason: "tool_calls", message: { toolCalls: [{ name: "get_weather", arguments: { city: "Paris" } }] } });
      const toolStream = client.chatStream(
        { backend, ...ask("weather"), tools: [{ name: "get_weather", parameters: { type: "object" } }] },
        { timeoutMs: 5_000 },
      );
      await drain(toolStream);
      expect((await toolStream.result).message.toolCalls).toEqual([{ id: expect.any(String), name: "get_weather", arguments: { city: "Paris" } }]);
    }
  });

  it("its 500 is retried, then answered BACKEND_UNAVAILABLE; with a fallback, the fallback answers", async () => {
    const { client } = stack;
    const before = mock.getRequests().length;
    await expect(client.chat({ backend: "mock-oai", ...ask("boom") }, { timeoutMs: 5_000 })).rejects.toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      message: expect.stringContaining("boom"),
      details: { attempts: 2, status: 500 },
    });
    expect(mock.getRequests().length - before).toBe(2);
    const reply = await client.chat({ backend: "mock-fb", ...ask("boom") }, { timeoutMs: 5_000 });
    expect(reply.meta).toMatchObject({ backend: "calm", tried: [{ backend: "mock-fb", code: "BACKEND_UNAVAILABLE" }] });
    expect(reply.message.content).toBe("calm answer");
  });

  it("its 429 (Retry-After: 1) cools the endpoint down: the fallback answers meanwhile without a request to it, then it serves again", async () => {
    const { client } = stack;
    mock.setChaos({ rateLimitRate: 1 });
    try {
      const first = await client.chat({ backend: "mock-fb", ...ask("hello") }, { timeoutMs: 5_000 });
      expect(first.meta).toMatchObject({ backend: "calm", tried: [{ backend: "mock-fb", code: "RATE_LIMITED" }] });
    } finally {
      mock.clearChaos();
    }
    const requests = mock.getRequests().length;
    const during = await client.chat({ backend: "mock-fb", ...ask("hello") }, { timeoutMs: 5_000 });
    expect(during.meta.backend).toBe("calm");
    expect(mock.getRequests().length).toBe(requests);
    await new Promise((r) => setTimeout(r, 1_100));
    const after = await client.chat({ backend: "mock-fb", ...ask("hello") }, { timeoutMs: 5_000 });
    expect(after.meta).toMatchObject({ backend: "mock-fb", tried: [] });
  });

  it("a stream it cuts mid-way ends with a typed error saying how much was delivered", async () => {
    const { client } = stack;
    const stream = client.chatStream({ backend: "mock-oai", ...ask("cut") }, { timeoutMs: 5_000 });
    const got: LlmDelta[] = [];
    const err = await (async () => {
      try {
        for await (const d of stream) got.push(d);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(got.length).toBeGreaterThan(0);
    expect(err).toMatchObject({ code: "BACKEND_UNAVAILABLE", details: { delivered: { chunks: got.length } } });
  });

  it("a malformed answer is BACKEND_ERROR (the provider does not speak its API), and falls back", async () => {
    const { client } = stack;
    await expect(client.chat({ backend: "mock-oai", ...ask("garbled") }, { timeoutMs: 5_000 })).rejects.toMatchObject({ code: "BACKEND_ERROR" });
    const reply = await client.chat({ backend: "mock-fb", ...ask("garbled") }, { timeoutMs: 5_000 });
    expect(reply.meta).toMatchObject({ backend: "calm", tried: [{ backend: "mock-fb", code: "BACKEND_ERROR" }] });
  });

  it("a first token later than the first-token timeout is cut there", async () => {
    const { client } = stack;
    const started = Date.now();
    const stream = client.chatStream({ backend: "mock-fast", ...ask("slow") }, { timeoutMs: 10_000 });
    await expect(stream.result).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED", details: { timeout: "first-token" } });
    // Two attempts of 300 ms (one retry), well before the 3 s the mock would take.
    expect(Date.now() - started).toBeLessThan(2_500);
  });
});
