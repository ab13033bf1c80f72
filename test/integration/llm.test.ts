import { createServer } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmFaultServer, CANNED_TEXT, type LlmFaultServer } from "@toolbus/llm-fault-server";
import { isToolbusError, type LlmDelta } from "@toolbus/client";
import { createInbox, headers as natsHeaders } from "nats";
import { Headers, subjects } from "@toolbus/protocol";
import { readChatLogs } from "../helpers/chat.js";
import { caller } from "@toolbus/cli";
import { createLogger, runWorkers } from "@toolbus/runtime";
import { removeTempDirs, startStack, tempDir, testConfig, toolbusCommand, waitFor, writeConfig, type Stack } from "../helpers/toolbus.js";

const OAI_KEY = "sk-oai-secret-4b1d9c";
const ANT_KEY = "sk-ant-secret-7e2f0a";
const WEATHER_TOOL = { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { city: { type: "string" } } } };

/** A port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Every delta's text, joined. */
const textOf = (deltas: LlmDelta[]): string => deltas.map((d) => d.content ?? "").join("");

describe("LLM backends through toolbus", () => {
  let oai: LlmFaultServer;
  let ant: LlmFaultServer;
  let limited: LlmFaultServer;
  let stack: Stack;
  let dir: string;
  let logs = "";

  let backends: Record<string, unknown>;

  beforeAll(async () => {
    oai = await startLlmFaultServer({ apiKey: OAI_KEY });
    ant = await startLlmFaultServer({ apiKey: ANT_KEY });
    limited = await startLlmFaultServer({ apiKey: OAI_KEY });
    dir = tempDir("toolbus-llm-chat-");
    const dead = await deadPort();
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs += chunk.toString();
        done();
      },
    });
    backends = {
      oai: { kind: "llm-openai", url: `${oai.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["gpt-test"], retry: { maxRetries: 0 } },
      ant: { kind: "llm-anthropic", url: `${ant.url}/v1`, apiKey: { env: "ANT_KEY" }, models: ["claude-test"], retry: { maxRetries: 0 } },
      // Streams that stall or never start, cut by short timeouts.
      slow: {
        kind: "llm-openai",
        url: `${oai.url}/v1`,
        apiKey: { env: "OAI_KEY" },
        models: ["slow-model"],
        timeouts: { firstToken: "300ms", idle: "300ms" },
        retry: { maxRetries: 0 },
        breaker: { volume: 100 },
      },
      // Nothing listens there: the fallback answers.
      dead: { kind: "llm-openai", url: `http://127.0.0.1:${dead}/v1`, models: ["dead-model"], fallbacks: ["ant"], retry: { maxRetries: 0 } },
      // 429 with Retry-After: cooled down, then served again; with and without a fallback.
      limited: { kind: "llm-openai", url: `${limited.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["limited-model"], retry: { maxRetries: 0 } },
      limitedfb: {
        kind: "llm-openai",
        url: `${limited.url}/v1`,
        apiKey: { env: "OAI_KEY" },
        models: ["limited-fb-model"],
        fallbacks: ["ant"],
        retry: { maxRetries: 0 },
      },
      // 1,000 tokens a minute.
      tpm: { kind: "llm-openai", url: `${oai.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["tpm-model"], rateLimit: { tokensPerMinute: 1000 } },
      // Its first token never comes in time: its attempts (retries too) must leave the fallback half the budget.
      slowfb: {
        kind: "llm-openai",
        url: `${oai.url}/v1`,
        apiKey: { env: "OAI_KEY" },
        models: ["slowfb-model"],
        fallbacks: ["ant"],
        retry: { maxRetries: 3, initialBackoff: "1ms", maxBackoff: "1ms" },
        breaker: { volume: 100 },
      },
      // Its caller is stopped in its test: the router skips it.
      ghostly: { kind: "llm-openai", url: `${oai.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["ghost-model"], fallbacks: ["ant"] },
      hopper: { kind: "llm-openai", url: `http://127.0.0.1:${dead}/v1`, models: ["hopper-model"], retry: { maxRetries: 0 } },
      dead2: { kind: "llm-openai", url: `http://127.0.0.1:${dead}/v1`, models: ["dead2-model"], fallbacks: ["ant"], retry: { maxRetries: 0 } },
      // Two caller replicas share one limit (the second starts in its test).
      tpmshared: { kind: "llm-openai", url: `${oai.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["tpm-shared-model"], rateLimit: { tokensPerMinute: 1000 } },
      tpmfb: {
        kind: "llm-openai",
        url: `${oai.url}/v1`,
        apiKey: { env: "OAI_KEY" },
        models: ["tpm-fb-model"],
        rateLimit: { tokensPerMinute: 1000 },
        fallbacks: ["ant"],
      },
    };
    stack = await startStack(
      // A model's own chain replaces its backend's.
      { chatLog: { enabled: true, dir }, backends, llm: { fallbacks: { "dead2-model": ["oai"] } } },
      { env: { OAI_KEY, ANT_KEY }, logs: sink },
    );
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    await Promise.all([oai?.close(), ant?.close(), limited?.close()]);
    removeTempDirs();
  });

  const hi = { messages: [{ role: "user" as const, content: "Say hello" }] };

  it("non-streamed, both kinds, by backend and by model: the same reply shape", async () => {
    const { client } = stack;
    const a = await client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000 });
    expect(a).toMatchObject({ ok: true, model: "gpt-test", message: { role: "assistant", content: CANNED_TEXT, toolCalls: [] }, stopReason: "end" });
    expect(a.usage.outputTokens).toBeGreaterThan(0);
    expect(a.meta).toMatchObject({ backend: "oai", endpoint: "oai#0", attempts: 1, tried: [] });
    const b = await client.chat({ model: "claude-test", ...hi }, { timeoutMs: 5_000 });
    expect(b).toMatchObject({ ok: true, model: "claude-test", message: { content: CANNED_TEXT, toolCalls: [] }, stopReason: "end" });
    expect(b.meta.backend).toBe("ant");
    // Direct to the backend's callers, without the router.
    const c = await client.chat({ backend: "ant", ...hi }, { timeoutMs: 5_000, direct: true });
    expect(c.message.content).toBe(CANNED_TEXT);
  });

  it("tool calls in the answer, both kinds, streamed and not", async () => {
    const { client } = stack;
    const ask = { messages: [{ role: "user" as const, content: "Weather in Paris?" }], tools: [WEATHER_TOOL] };
    for (const backend of ["oai", "ant"]) {
      const server = backend === "oai" ? oai : ant;
      server.faults.push("tool-call");
      const whole = await client.chat({ backend, ...ask }, { timeoutMs: 5_000 });
      expect(whole.stopReason).toBe("tool_calls");
      expect(whole.message.toolCalls).toEqual([{ id: expect.any(String), name: "get_weather", arguments: { city: "Paris" } }]);
      // The tool went to the provider in its own format.
      const sent = server.bodies[server.bodies.length - 1]!;
      expect(JSON.stringify(sent.tools)).toContain(backend === "oai" ? '"function"' : '"input_schema"');
      server.faults.push("tool-call");
      const stream = client.chatStream({ backend, ...ask }, { timeoutMs: 5_000 });
      const deltas: LlmDelta[] = [];
      for await (const d of stream) deltas.push(d);
      const result = await stream.result;
      expect(deltas.some((d) => d.toolCall?.name === "get_weather")).toBe(true);
      expect(result.message.toolCalls).toEqual([{ id: expect.any(String), name: "get_weather", arguments: { city: "Paris" } }]);
      expect(result.stopReason).toBe("tool_calls");
    }
  });

  it("streamed, both kinds: numbered chunks as they come, then the whole reply with usage", async () => {
    const { client } = stack;
    for (const backend of ["oai", "ant"]) {
      const stream = client.chatStream({ backend, ...hi }, { timeoutMs: 5_000 });
      const deltas: LlmDelta[] = [];
      for await (const d of stream) deltas.push(d);
      const result = await stream.result;
      expect(deltas.length).toBeGreaterThan(2);
      expect(textOf(deltas)).toBe(CANNED_TEXT);
      expect(result.message.content).toBe(CANNED_TEXT);
      expect(result.usage.outputTokens).toBeGreaterThan(0);
      expect(result.usage.inputTokens).toBeGreaterThan(0);
      expect(result.meta.firstTokenMs).toBeGreaterThan(0);
    }
  });

  it("a stream that stalls is cut at the idle timeout; one that never starts at the first-token timeout", async () => {
    const { client } = stack;
    oai.faults.push("stall-after=3");
    const stalled = client.chatStream({ backend: "slow", ...hi }, { timeoutMs: 10_000 });
    const got: LlmDelta[] = [];
    const started = Date.now();
    const err = await (async () => {
      try {
        for await (const d of stalled) got.push(d);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isToolbusError(err)).toBe(true);
    expect(err).toMatchObject({ code: "DEADLINE_EXCEEDED", details: { timeout: "idle", delivered: { chunks: got.length } } });
    expect(got.length).toBeGreaterThan(0);
    expect(Date.now() - started).toBeLessThan(5_000);

    oai.faults.push("slow-first-token=3000");
    const silent = client.chatStream({ backend: "slow", ...hi }, { timeoutMs: 10_000 });
    await expect(silent.result).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED", details: { timeout: "first-token" } });
    expect(silent.received).toBe(0);
  });

  it("a dead primary: the fallback answers within the budget, and meta names both", async () => {
    const { client } = stack;
    const reply = await client.chat({ backend: "dead", ...hi }, { timeoutMs: 5_000 });
    expect(reply.meta.backend).toBe("ant");
    expect(reply.meta.tried).toEqual([{ backend: "dead", code: "BACKEND_UNAVAILABLE", message: expect.stringContaining("ECONNREFUSED") }]);
    // The fallback's own model, not the dead one's.
    expect(reply.model).toBe("claude-test");
    const stream = client.chatStream({ model: "dead-model", ...hi }, { timeoutMs: 5_000 });
    const deltas: LlmDelta[] = [];
    for await (const d of stream) deltas.push(d);
    expect(textOf(deltas)).toBe(CANNED_TEXT);
    expect((await stream.result).meta).toMatchObject({ backend: "ant", tried: [{ backend: "dead" }] });
  });

  it("with a fallback in line, a backend's attempts (retries too) stop at half the budget; the fallback gets the rest", async () => {
    const { client } = stack;
    for (let i = 0; i < 4; i++) oai.faults.push("slow-first-token=5000");
    const started = Date.now();
    const stream = client.chatStream({ backend: "slowfb", ...hi }, { timeoutMs: 2_000 });
    for await (const _ of stream) void _;
    const reply = await stream.result;
    const elapsed = Date.now() - started;
    expect(reply.meta).toMatchObject({ backend: "ant", tried: [{ backend: "slowfb", code: "DEADLINE_EXCEEDED" }] });
    // The first half (1 s) went to slowfb, whatever its retries; the fallback answered at once after it.
    expect(elapsed).toBeGreaterThan(900);
    expect(elapsed).toBeLessThan(1_600);
    oai.faults.splice(0);
  });

  it("a model's own fallback chain replaces its backend's; a backend with no live caller is skipped, and the fallback logs the user's message", async () => {
    const { client } = stack;
    expect((await client.chat({ model: "dead2-model", ...hi }, { timeoutMs: 5_000 })).meta).toMatchObject({ backend: "oai", tried: [{ backend: "dead2" }] });
    // By backend name, the backend's own chain.
    expect((await client.chat({ backend: "dead2", ...hi }, { timeoutMs: 5_000 })).meta).toMatchObject({ backend: "ant", tried: [{ backend: "dead2" }] });

    const ghost = stack.toolbus.workers.find((w) => w.name === "caller:ghostly")!;
    await ghost.stop(0);
    await waitFor("the router to drop ghostly's caller", async () => (await client.listTools("ghostly", { timeoutMs: 1_000 }))[0]!.liveCallers === 0);
    const reply = await client.chat({ backend: "ghostly", ...hi }, { timeoutMs: 5_000, conversationId: "ghost-conv" });
    expect(reply.meta).toMatchObject({ backend: "ant", tried: [{ backend: "ghostly", code: "BACKEND_UNAVAILABLE" }] });
    await waitFor("two events", () => (readChatLogs(dir).get("ghost-conv")?.length ?? 0) >= 2, 10_000);
    expect(
      readChatLogs(dir)
        .get("ghost-conv")!
        .map((e) => e.type),
    ).toEqual(["user_message", "assistant_message"]);

    // A caller falling back skips a backend with no live caller too (here the chain comes in a raw request).
    const inbox = createInbox();
    const answer = new Promise<Record<string, unknown>>((resolve) => {
      const sub = client.nc.subscribe(inbox, {
        callback: (_err, msg) => {
          sub.unsubscribe();
          resolve(JSON.parse(new TextDecoder().decode(msg.data)) as Record<string, unknown>);
        },
      });
    });
    const h = natsHeaders();
    h.set(Headers.TimeoutMs, "5000");
    h.set(Headers.Fallbacks, "ghostly,ant");
    client.nc.publish(subjects.backendChat("hopper"), JSON.stringify({ backend: "hopper", ...hi }), { reply: inbox, headers: h });
    expect(await answer).toMatchObject({
      ok: true,
      meta: {
        backend: "ant",
        tried: [
          { backend: "hopper", code: "BACKEND_UNAVAILABLE" },
          { backend: "ghostly", message: 'backend "ghostly" has no live caller' },
        ],
      },
    });
  });

  it("429 with Retry-After: 2 cools the endpoint down 2 s (RATE_LIMITED or the fallback meanwhile), then it serves again", async () => {
    const { client } = stack;
    const before = limited.stats.requests;
    limited.faults.push("status=429;retry-after=2");
    // Even with a budget that would outlast the wait, the answer is RATE_LIMITED at once, with the wait.
    const first = await client.chat({ backend: "limited", ...hi }, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    const cooledAt = Date.now();
    expect(first).toMatchObject({ code: "RATE_LIMITED", retryAfterMs: 2_000 });
    // In the window: refused at once without a request upstream, with how long is left.
    const asked = Date.now();
    const second = await client.chat({ backend: "limited", ...hi }, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(Date.now() - asked).toBeLessThan(500);
    expect(second).toMatchObject({ code: "RATE_LIMITED" });
    expect((second as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(500);
    expect((second as { retryAfterMs: number }).retryAfterMs).toBeLessThanOrEqual(2_000);
    expect(limited.stats.requests - before).toBe(1);
    // After the 2 s, served again.
    await new Promise((r) => setTimeout(r, Math.max(0, 2_050 - (Date.now() - cooledAt))));
    expect((await client.chat({ backend: "limited", ...hi }, { timeoutMs: 5_000 })).message.content).toBe(CANNED_TEXT);

    // With a fallback: the 429 goes to the fallback at once, and so does every call in the window.
    limited.faults.push("status=429;retry-after=2");
    const fb1 = await client.chat({ backend: "limitedfb", ...hi }, { timeoutMs: 5_000 });
    expect(fb1.meta).toMatchObject({ backend: "ant", tried: [{ backend: "limitedfb", code: "RATE_LIMITED" }] });
    const upstream = limited.stats.requests;
    const fb2 = await client.chat({ backend: "limitedfb", ...hi }, { timeoutMs: 5_000 });
    expect(fb2.meta.backend).toBe("ant");
    expect(limited.stats.requests).toBe(upstream);
    await new Promise((r) => setTimeout(r, 2_100));
    const back = await client.chat({ backend: "limitedfb", ...hi }, { timeoutMs: 5_000 });
    expect(back.meta).toMatchObject({ backend: "limitedfb", tried: [] });
  });

  it("tokens/min: with a limit of 1,000 and requests of about 300 tokens, the fourth in the minute is refused (or falls back)", async () => {
    const { client } = stack;
    // 800 characters ≈ 200 tokens of prompt, plus maxTokens 100: about 300 each.
    const big = { messages: [{ role: "user" as const, content: "x".repeat(800) }], maxTokens: 100 };
    for (let i = 0; i < 3; i++) await client.chat({ backend: "tpm", ...big }, { timeoutMs: 3_000 });
    await expect(client.chat({ backend: "tpm", ...big }, { timeoutMs: 3_000 })).rejects.toMatchObject({
      code: "RATE_LIMITED",
      retryAfterMs: expect.any(Number),
    });
    for (let i = 0; i < 3; i++) expect((await client.chat({ backend: "tpmfb", ...big }, { timeoutMs: 3_000 })).meta.backend).toBe("tpmfb");
    const fourth = await client.chat({ backend: "tpmfb", ...big }, { timeoutMs: 3_000 });
    expect(fourth.meta).toMatchObject({ backend: "ant", tried: [{ backend: "tpmfb", code: "RATE_LIMITED" }] });
  });

  it("tokens/min holds across caller replicas (they tell each other what they used); GenAI metrics on /metrics", async () => {
    const { client } = stack;
    // A second process with another replica of tpmshared's caller, and the only caller of "solo".
    const config = testConfig(
      stack.nats.url,
      {
        admin: { port: 0 },
        backends: { tpmshared: backends.tpmshared, solo: { kind: "llm-openai", url: `${oai.url}/v1`, apiKey: { env: "OAI_KEY" }, models: ["solo-model"] } },
      },
      { OAI_KEY },
    );
    const extra = await runWorkers({
      name: "extra",
      config,
      logger: createLogger({ level: "silent" }),
      start: async (deps) => [await caller(deps, config, "tpmshared"), await caller(deps, config, "solo")],
    });
    try {
      await waitFor("two callers of tpmshared", async () => (await client.callerStatus(300)).filter((s) => s.backend === "tpmshared").length === 2);
      const big = { messages: [{ role: "user" as const, content: "x".repeat(800) }], maxTokens: 100 };
      // Six of about 300 tokens each, spread over both replicas by the queue group: 1,000 a minute lets
      // three through in all, not three per replica.
      const outcomes = [];
      for (let i = 0; i < 6; i++)
        outcomes.push(
          await client.chat({ backend: "tpmshared", ...big }, { timeoutMs: 3_000, direct: true }).then(
            () => "ok",
            (e: { code: string }) => e.code,
          ),
        );
      expect(outcomes).toEqual(["ok", "ok", "ok", "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]);

      await client.chat({ backend: "solo", ...hi }, { timeoutMs: 3_000, direct: true });
      const stream = client.chatStream({ backend: "solo", ...hi }, { timeoutMs: 3_000, direct: true });
      for await (const _ of stream) void _;
      const metrics = await (await fetch(`http://127.0.0.1:${extra.adminPort}/metrics`)).text();
      const labels = 'gen_ai_provider_name="openai",gen_ai_request_model="solo-model",backend="solo"';
      expect(metrics).toContain(`gen_ai_client_token_usage_count{${labels},gen_ai_token_type="input"} 2`);
      expect(metrics).toContain(`gen_ai_client_token_usage_count{${labels},gen_ai_token_type="output"} 2`);
      expect(metrics).toContain(`gen_ai_client_operation_duration_seconds_count{${labels},error_type=""} 2`);
      expect(metrics).toContain(`gen_ai_server_time_to_first_token_seconds_count{${labels}} 1`);
      expect(metrics).toContain(`gen_ai_server_time_per_output_token_seconds_count{${labels}} 1`);
      // A model the backend does not list is passed on, but counted as "other" (made-up names must not grow the metrics).
      await client.chat({ backend: "solo", model: "made-up-7", ...hi }, { timeoutMs: 3_000, direct: true });
      const after = await (await fetch(`http://127.0.0.1:${extra.adminPort}/metrics`)).text();
      expect(after).toContain('gen_ai_request_model="other"');
      expect(after).not.toContain("made-up-7");
    } finally {
      await extra.stop();
    }
  });

  it("a client that stops reading a stream closes the upstream request", async () => {
    const { client } = stack;
    const before = oai.stats.abortedByClient;
    oai.faults.push("stall-after=2");
    const stream = client.chatStream({ backend: "oai", ...hi }, { timeoutMs: 20_000 });
    for await (const d of stream) {
      expect(d).toBeDefined();
      break; // the client leaves after the first chunk
    }
    await expect(stream.result).rejects.toMatchObject({ code: "CANCELLED" });
    await waitFor("the fault server to see the connection closed", () => oai.stats.abortedByClient > before, 5_000);

    // An AbortSignal does the same.
    const aborted = oai.stats.abortedByClient;
    oai.faults.push("slow-first-token=10000");
    const controller = new AbortController();
    const pending = client.chat({ backend: "oai", ...hi }, { timeoutMs: 20_000, signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    await expect(pending).rejects.toMatchObject({ code: "CANCELLED" });
    await waitFor("the fault server to see the second connection closed", () => oai.stats.abortedByClient > aborted, 5_000);
  });

  it("a client that stops listening without a cancel (gone): the upstream request is closed too", async () => {
    const { client } = stack;
    const before = oai.stats.abortedByClient;
    // A chunk every 300 ms: the next one after the client left finds nobody listening.
    oai.faults.push("chunk-every=300");
    const inbox = createInbox();
    const first = new Promise<void>((resolve) => {
      const sub = client.nc.subscribe(inbox, {
        callback: () => {
          // The first chunk: this client goes away without a word.
          sub.unsubscribe();
          resolve();
        },
      });
    });
    const h = natsHeaders();
    h.set(Headers.TimeoutMs, "20000");
    client.nc.publish(subjects.llmChat(), JSON.stringify({ backend: "oai", ...hi, stream: true }), { reply: inbox, headers: h });
    await first;
    await waitFor("the fault server to see the connection closed", () => oai.stats.abortedByClient > before, 5_000);
  });

  it("an answer larger than a NATS message: whole, PAYLOAD_TOO_LARGE; streamed, it arrives in pieces and whole in the result", async () => {
    const { client } = stack;
    const max = client.nc.info!.max_payload;
    oai.faults.push(`huge=${2 * max}`);
    await expect(client.chat({ backend: "oai", ...hi }, { timeoutMs: 10_000 })).rejects.toMatchObject({ code: "PAYLOAD_TOO_LARGE" });
    // Far larger than any reply: reading stops at the cap, and nothing is retried or moved elsewhere.
    oai.faults.push(`huge=${6 * max}`);
    await expect(client.chat({ backend: "oai", ...hi }, { timeoutMs: 10_000 })).rejects.toMatchObject({
      code: "PAYLOAD_TOO_LARGE",
      message: expect.stringContaining("stream it instead"),
    });
    oai.faults.push(`huge=${2 * max}`);
    const stream = client.chatStream({ backend: "oai", ...hi }, { timeoutMs: 10_000 });
    const deltas: LlmDelta[] = [];
    for await (const d of stream) deltas.push(d);
    expect(deltas.length).toBeGreaterThan(2);
    const result = await stream.result;
    expect(result.message.content.length).toBe(2 * max);
    expect(result).not.toHaveProperty("contentOmitted");
  });

  it("chats that name a conversation log user_message then assistant_message (or error)", async () => {
    const { client } = stack;
    await client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000, conversationId: "llm-conv" });
    const stream = client.chatStream({ backend: "dead", messages: [{ role: "user", content: "second" }] }, { timeoutMs: 5_000, conversationId: "llm-conv" });
    for await (const _ of stream) void _;
    oai.faults.push("status=400");
    await expect(client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000, conversationId: "llm-conv" })).rejects.toMatchObject({ code: "BACKEND_ERROR" });
    await waitFor("six events", () => (readChatLogs(dir).get("llm-conv")?.length ?? 0) >= 6, 10_000);
    const events = readChatLogs(dir).get("llm-conv")!;
    expect(events.map((e) => e.type)).toEqual(["user_message", "assistant_message", "user_message", "assistant_message", "user_message", "error"]);
    expect(events[0]!.payload).toMatchObject({ backend: "oai", content: "Say hello" });
    expect(events[1]!.payload).toMatchObject({ backend: "oai", content: CANNED_TEXT, usage: { outputTokens: expect.any(Number) } });
    expect(events[3]!.payload).toMatchObject({ backend: "ant", meta: { tried: [{ backend: "dead" }] } });
    expect(events[5]!.payload).toMatchObject({ error: { code: "BACKEND_ERROR" } });
  });

  it("bad requests get typed errors: no model or backend, an unknown model, an MCP subject for an LLM", async () => {
    const { client } = stack;
    await expect(client.chat({ messages: hi.messages } as never, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await expect(client.chat({ model: "nope", ...hi }, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "UNKNOWN_BACKEND" });
    await expect(client.chat({ backend: "oai", messages: [] }, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await expect(client.callTool("oai", "anything", {}, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: "BAD_REQUEST" });
  });

  it("the API keys appear in no log line, chat event or reply", async () => {
    const { client } = stack;
    // Make sure failures were logged too (their messages carry provider answers).
    oai.faults.push("status=401");
    await client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000, conversationId: "key-check" }).catch(() => undefined);
    // A provider (or proxy) that quotes the key it refused: the quote is cut out.
    oai.faults.push("echo-key");
    await expect(client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000, conversationId: "key-check" })).rejects.toMatchObject({
      message: expect.stringContaining("Incorrect API key provided: [redacted]"),
    });
    const reply = await client.chat({ backend: "oai", ...hi }, { timeoutMs: 5_000, conversationId: "key-check" });
    await waitFor("the events", () => (readChatLogs(dir).get("key-check")?.length ?? 0) >= 6, 10_000);
    const everything = [logs, JSON.stringify(reply), JSON.stringify([...readChatLogs(dir).values()])].join("\n");
    expect(logs.length).toBeGreaterThan(1000);
    for (const key of [OAI_KEY, ANT_KEY]) expect(everything).not.toContain(key);
    // The keys did reach the providers (the fault servers check them).
    expect(oai.stats.requests).toBeGreaterThan(0);
  });

  it("`toolbus chat <backend|model> prompt [--stream] [--json]` prints the answer; a failure exits with its code", async () => {
    // The command needs the config's backends (to tell a backend from a model), not their API keys.
    const file = writeConfig({ nats: { servers: [stack.nats.url] }, backends });
    const run = (...args: string[]) => toolbusCommand(["--config", file, "chat", ...args]);
    const plain = await run("oai", "Say hello");
    expect(plain).toMatchObject({ code: 0, stderr: "", stdout: `${CANNED_TEXT}\n` });
    const streamed = await run("claude-test", "Say hello", "--stream");
    expect(streamed).toMatchObject({ code: 0, stderr: "", stdout: `${CANNED_TEXT}\n` });
    const json = await run("dead", "Say hello", "--json");
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, message: { content: CANNED_TEXT }, meta: { backend: "ant", tried: [{ backend: "dead" }] } });
    const lines = (await run("oai", "Say hello", "--stream", "--json")).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBeGreaterThan(2);
    expect(lines[lines.length - 1]).toMatchObject({ ok: true, stopReason: "end" });
    expect(lines.slice(0, -1).every((l) => "content" in l || "toolCall" in l)).toBe(true);
    oai.faults.push("status=400");
    const refused = await run("oai", "Say hello");
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/^toolbus: BACKEND_ERROR: oai#0: HTTP 400/);
    const unknown = await run("no-such-model", "hi");
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/UNKNOWN_BACKEND: no backend serves model "no-such-model"/);
    const help = await toolbusCommand(["chat", "--help"]);
    expect(help.stdout).toMatch(/--stream/);
    const tools = await toolbusCommand(["--config", file, "tools", "oai"]);
    expect(tools.stdout).toMatch(/an LLM backend, no tools: models gpt-test/);
  });
});
