import type { LlmChatRequest, LlmDelta, LlmMessage, LlmStopReason, LlmToolCall, LlmUsage } from "@toolbus/protocol";

/**
 * Translation between toolbus's one chat shape and each provider's wire format, both ways: the
 * request body, a whole answer, and the events of a stream. Pure functions of data, so each provider's
 * quirks are tested without a server.
 */

/** A whole answer, whatever the provider. */
export interface Completion {
  model: string;
  content: string;
  toolCalls: LlmToolCall[];
  stopReason: LlmStopReason;
  usage: LlmUsage;
}

/** The provider answered something that is not its API (not JSON, wrong shape, malformed events). */
export class ProviderProtocolError extends Error {
  override name = "ProviderProtocolError";
}

export function isProviderProtocolError(err: unknown): err is ProviderProtocolError {
  return err instanceof Error && err.name === "ProviderProtocolError";
}

/** One server-sent event as eventsource-parser hands it over. */
export interface SseEvent {
  event?: string | undefined;
  data: string;
}

/** Turns one stream's events into deltas, and keeps what the final reply needs. */
export interface StreamTranslator {
  /** The deltas this event carries (often none); `done` once the provider said the answer is complete. */
  push(event: SseEvent): { deltas: LlmDelta[]; done: boolean };
  /** The whole answer, assembled from every delta seen. */
  completion(): Completion;
  /**
   * The provider said why it stopped (a finish or stop reason), even if the stream then ended without
   * its closing event (`[DONE]`, `message_stop`), as some OpenAI-compatible servers do.
   */
  finished(): boolean;
}

export interface Provider {
  /** Appended to the endpoint's base URL (which ends with `/v1`). */
  readonly path: string;
  headers(apiKey: string | undefined): Record<string, string>;
  body(request: LlmChatRequest, model: string, stream: boolean): unknown;
  parse(json: unknown): Completion;
  stream(model: string): StreamTranslator;
}

type Json = Record<string, unknown>;

const asObject = (value: unknown, what: string): Json => {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new ProviderProtocolError(`${what} is not an object`);
  return value as Json;
};

const count = (value: unknown): number => (typeof value === "number" && Number.isFinite(value) && value >= 0 ? Math.round(value) : 0);

/** Tool-call arguments arrive as JSON text; a model that wrote broken JSON keeps its text under `_raw`. */
function parseArguments(text: string): Record<string, unknown> {
  if (text.trim() === "") return {};
  try {
    const parsed: unknown = JSON.parse(text);
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : { _raw: text };
  } catch {
    return { _raw: text };
  }
}

/** Streamed tool calls, by their index: id and name once, arguments in pieces. */
class ToolCallAssembly {
  readonly #calls = new Map<number, { id: string; name: string; args: string }>();
  add(delta: NonNullable<LlmDelta["toolCall"]>): void {
    const call = this.#calls.get(delta.index) ?? { id: "", name: "", args: "" };
    if (delta.id) call.id = delta.id;
    if (delta.name) call.name = delta.name;
    if (delta.arguments) call.args += delta.arguments;
    this.#calls.set(delta.index, call);
  }
  calls(): LlmToolCall[] {
    return [...this.#calls.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, c]) => ({ id: c.id || `call_${index}`, name: c.name || "unknown", arguments: parseArguments(c.args) }));
  }
}

// ---------------------------------------------------------------------------------------------------
// OpenAI-compatible chat completions (OpenAI, LM Studio, vLLM, Ollama)

const OPENAI_STOP: Record<string, LlmStopReason> = {
  stop: "end",
  length: "max_tokens",
  tool_calls: "tool_calls",
  function_call: "tool_calls",
  content_filter: "content_filter",
};

function openaiMessage(m: LlmMessage): Json {
  if (m.role === "tool") return { role: "tool", tool_call_id: m.toolCallId, content: m.content ?? "" };
  if (m.role === "assistant" && m.toolCalls?.length) {
    return {
      role: "assistant",
      content: m.content || null,
      tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: JSON.stringify(c.arguments) } })),
    };
  }
  return { role: m.role, content: m.content ?? "" };
}

export const openai: Provider = {
  path: "/chat/completions",
  headers: (apiKey) => ({ "content-type": "application/json", accept: "application/json", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) }),
  body(request, model, stream) {
    const body: Json = { model, messages: request.messages.map(openaiMessage) };
    if (request.tools?.length)
      body.tools = request.tools.map((t) => ({
        type: "function",
        function: { name: t.name, ...(t.description !== undefined ? { description: t.description } : {}), parameters: t.parameters },
      }));
    if (request.toolChoice !== undefined)
      body.tool_choice = typeof request.toolChoice === "string" ? request.toolChoice : { type: "function", function: { name: request.toolChoice.name } };
    // max_tokens, not max_completion_tokens: every OpenAI-compatible server (LM Studio, vLLM, Ollama) knows it.
    if (request.maxTokens !== undefined) body.max_tokens = request.maxTokens;
    if (request.temperature !== undefined) body.temperature = request.temperature;
    if (stream) {
      body.stream = true;
      // Without it a stream has no usage at all (and tokens/min could not be corrected).
      body.stream_options = { include_usage: true };
    }
    return body;
  },
  parse(json) {
    const body = asObject(json, "the completion");
    const choices = body.choices;
    if (!Array.isArray(choices) || choices.length === 0) throw new ProviderProtocolError("the completion has no choices");
    const choice = asObject(choices[0], "choices[0]");
    const message = asObject(choice.message, "choices[0].message");
    const toolCalls = Array.isArray(message.tool_calls)
      ? message.tool_calls.map((raw, i) => {
          const call = asObject(raw, `tool_calls[${i}]`);
          const fn = asObject(call.function, `tool_calls[${i}].function`);
          return { id: String(call.id || `call_${i}`), name: String(fn.name || "unknown"), arguments: parseArguments(String(fn.arguments ?? "")) };
        })
      : [];
    const usage = body.usage && typeof body.usage === "object" ? (body.usage as Json) : {};
    return {
      model: String(body.model ?? ""),
      content: typeof message.content === "string" ? message.content : "",
      toolCalls,
      stopReason: OPENAI_STOP[String(choice.finish_reason)] ?? "other",
      usage: { inputTokens: count(usage.prompt_tokens), outputTokens: count(usage.completion_tokens) },
    };
  },
  stream(requestedModel) {
    let model = requestedModel;
    let content = "";
    let stopReason: LlmStopReason = "other";
    let sawStop = false;
    let usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
    const tools = new ToolCallAssembly();
    // Servers that leave out a tool call's index: a piece with an id starts the next call, one without continues the last.
    let lastIndex = -1;
    return {
      push(event) {
        if (event.data.trim() === "[DONE]") return { deltas: [], done: true };
        let chunk: Json;
        try {
          chunk = asObject(JSON.parse(event.data), "a stream chunk");
        } catch (err) {
          throw new ProviderProtocolError(`malformed stream event: ${(err as Error).message}`);
        }
        if (chunk.error) throw new ProviderProtocolError(`the stream reported an error: ${JSON.stringify(chunk.error).slice(0, 200)}`);
        if (typeof chunk.model === "string" && chunk.model) model = chunk.model;
        if (chunk.usage && typeof chunk.usage === "object") {
          const u = chunk.usage as Json;
          usage = { inputTokens: count(u.prompt_tokens), outputTokens: count(u.completion_tokens) };
        }
        const deltas: LlmDelta[] = [];
        const choice = Array.isArray(chunk.choices) && chunk.choices[0] && typeof chunk.choices[0] === "object" ? (chunk.choices[0] as Json) : undefined;
        if (!choice) return { deltas, done: false };
        const delta = choice.delta && typeof choice.delta === "object" ? (choice.delta as Json) : {};
        if (typeof delta.content === "string" && delta.content !== "") {
          content += delta.content;
          deltas.push({ content: delta.content });
        }
        if (Array.isArray(delta.tool_calls)) {
          for (const raw of delta.tool_calls) {
            const call = asObject(raw, "a streamed tool call");
            const fn = call.function && typeof call.function === "object" ? (call.function as Json) : {};
            const index =
              typeof call.index === "number" && Number.isInteger(call.index) && call.index >= 0
                ? call.index
                : typeof call.id === "string" && call.id
                  ? lastIndex + 1
                  : Math.max(0, lastIndex);
            lastIndex = Math.max(lastIndex, index);
            const piece = {
              index,
              ...(typeof call.id === "string" ? { id: call.id } : {}),
              ...(typeof fn.name === "string" ? { name: fn.name } : {}),
              ...(typeof fn.arguments === "string" && fn.arguments !== "" ? { arguments: fn.arguments } : {}),
            };
            tools.add(piece);
            deltas.push({ toolCall: piece });
          }
        }
        if (typeof choice.finish_reason === "string") {
          stopReason = OPENAI_STOP[choice.finish_reason] ?? "other";
          sawStop = true;
        }
        return { deltas, done: false };
      },
      completion: () => ({ model, content, toolCalls: tools.calls(), stopReason, usage }),
      finished: () => sawStop,
    };
  },
};

// ---------------------------------------------------------------------------------------------------
// Anthropic messages

const ANTHROPIC_STOP: Record<string, LlmStopReason> = {
  end_turn: "end",
  max_tokens: "max_tokens",
  tool_use: "tool_calls",
  stop_sequence: "stop_sequence",
  refusal: "content_filter",
  pause_turn: "other",
};

/** Anthropic requires max_tokens; this is what a request that sets none gets. */
export const ANTHROPIC_DEFAULT_MAX_TOKENS = 4096;
const ANTHROPIC_VERSION = "2023-06-01";

/**
 * Anthropic has no system or tool role: system messages become the top-level `system`, tool results
 * become `tool_result` blocks of a user turn, and consecutive turns of one role are merged (it refuses
 * two user turns in a row).
 */
function anthropicMessages(messages: readonly LlmMessage[]): { system: string | undefined; messages: Json[] } {
  const system: string[] = [];
  const turns: Array<{ role: "user" | "assistant"; content: Json[] }> = [];
  const add = (role: "user" | "assistant", blocks: Json[]): void => {
    // Anthropic refuses empty text blocks and empty turns: a message with nothing in it is left out.
    blocks = blocks.filter((b) => !(b.type === "text" && b.text === ""));
    if (blocks.length === 0) return;
    const last = turns[turns.length - 1];
    if (last && last.role === role) last.content.push(...blocks);
    else turns.push({ role, content: blocks });
  };
  for (const m of messages) {
    if (m.role === "system") system.push(m.content ?? "");
    else if (m.role === "tool") add("user", [{ type: "tool_result", tool_use_id: m.toolCallId, content: m.content ?? "" }]);
    else if (m.role === "assistant") {
      const blocks: Json[] = m.content ? [{ type: "text", text: m.content }] : [];
      for (const c of m.toolCalls ?? []) blocks.push({ type: "tool_use", id: c.id, name: c.name, input: c.arguments });
      add("assistant", blocks);
    } else add("user", [{ type: "text", text: m.content ?? "" }]);
  }
  return { system: system.length ? system.join("\n\n") : undefined, messages: turns };
}

export const anthropic: Provider = {
  path: "/messages",
  headers: (apiKey) => ({
    "content-type": "application/json",
    accept: "application/json",
    "anthropic-version": ANTHROPIC_VERSION,
    ...(apiKey ? { "x-api-key": apiKey } : {}),
  }),
  body(request, model, stream) {
    const { system, messages } = anthropicMessages(request.messages);
    const body: Json = { model, messages, max_tokens: request.maxTokens ?? ANTHROPIC_DEFAULT_MAX_TOKENS };
    if (system !== undefined) body.system = system;
    if (request.tools?.length)
      body.tools = request.tools.map((t) => ({
        name: t.name,
        ...(t.description !== undefined ? { description: t.description } : {}),
        input_schema: t.parameters,
      }));
    const choice = request.toolChoice;
    if (choice !== undefined)
      body.tool_choice = typeof choice === "string" ? { type: choice === "required" ? "any" : choice } : { type: "tool", name: choice.name };
    if (request.temperature !== undefined) body.temperature = Math.min(1, request.temperature); // Anthropic's range is [0, 1]
    if (stream) body.stream = true;
    return body;
  },
  parse(json) {
    const body = asObject(json, "the message");
    if (!Array.isArray(body.content)) throw new ProviderProtocolError("the message has no content");
    let content = "";
    const toolCalls: LlmToolCall[] = [];
    for (const [i, raw] of body.content.entries()) {
      const block = asObject(raw, `content[${i}]`);
      if (block.type === "text" && typeof block.text === "string") content += block.text;
      else if (block.type === "tool_use")
        toolCalls.push({
          id: String(block.id || `toolu_${i}`),
          name: String(block.name || "unknown"),
          arguments: block.input && typeof block.input === "object" ? (block.input as Record<string, unknown>) : {},
        });
    }
    const usage = body.usage && typeof body.usage === "object" ? (body.usage as Json) : {};
    return {
      model: String(body.model ?? ""),
      content,
      toolCalls,
      stopReason: ANTHROPIC_STOP[String(body.stop_reason)] ?? "other",
      usage: { inputTokens: count(usage.input_tokens), outputTokens: count(usage.output_tokens) },
    };
  },
  stream(requestedModel) {
    let model = requestedModel;
    let content = "";
    let stopReason: LlmStopReason = "other";
    let sawStop = false;
    const usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
    const tools = new ToolCallAssembly();
    // Content blocks are numbered across text and tool_use; tool calls get their own 0, 1, ...
    const toolIndexOfBlock = new Map<number, number>();
    return {
      push(event) {
        let data: Json;
        try {
          data = asObject(JSON.parse(event.data), "a stream event");
        } catch (err) {
          throw new ProviderProtocolError(`malformed stream event: ${(err as Error).message}`);
        }
        const type = String(data.type ?? event.event ?? "");
        const deltas: LlmDelta[] = [];
        if (type === "error") throw new ProviderProtocolError(`the stream reported an error: ${JSON.stringify(data.error ?? data).slice(0, 200)}`);
        if (type === "message_start") {
          const message = data.message && typeof data.message === "object" ? (data.message as Json) : {};
          if (typeof message.model === "string" && message.model) model = message.model;
          const u = message.usage && typeof message.usage === "object" ? (message.usage as Json) : {};
          usage.inputTokens = count(u.input_tokens);
          usage.outputTokens = count(u.output_tokens);
        } else if (type === "content_block_start") {
          const block = data.content_block && typeof data.content_block === "object" ? (data.content_block as Json) : {};
          if (block.type === "tool_use") {
            const index = toolIndexOfBlock.size;
            toolIndexOfBlock.set(count(data.index), index);
            const piece = { index, id: String(block.id ?? ""), name: String(block.name ?? "") };
            tools.add(piece);
            deltas.push({ toolCall: piece });
          } else if (block.type === "text" && typeof block.text === "string" && block.text !== "") {
            content += block.text;
            deltas.push({ content: block.text });
          }
        } else if (type === "content_block_delta") {
          const delta = data.delta && typeof data.delta === "object" ? (data.delta as Json) : {};
          if (delta.type === "text_delta" && typeof delta.text === "string" && delta.text !== "") {
            content += delta.text;
            deltas.push({ content: delta.text });
          } else if (delta.type === "input_json_delta" && typeof delta.partial_json === "string" && delta.partial_json !== "") {
            const index = toolIndexOfBlock.get(count(data.index));
            if (index !== undefined) {
              const piece = { index, arguments: delta.partial_json };
              tools.add(piece);
              deltas.push({ toolCall: piece });
            }
          }
        } else if (type === "message_delta") {
          const delta = data.delta && typeof data.delta === "object" ? (data.delta as Json) : {};
          if (typeof delta.stop_reason === "string") {
            stopReason = ANTHROPIC_STOP[delta.stop_reason] ?? "other";
            sawStop = true;
          }
          const u = data.usage && typeof data.usage === "object" ? (data.usage as Json) : {};
          if (u.output_tokens !== undefined) usage.outputTokens = count(u.output_tokens);
          if (u.input_tokens !== undefined) usage.inputTokens = count(u.input_tokens);
        } else if (type === "message_stop") {
          return { deltas, done: true };
        }
        return { deltas, done: false };
      },
      completion: () => ({ model, content, toolCalls: tools.calls(), stopReason, usage: { ...usage } }),
      finished: () => sawStop,
    };
  },
};

export function providerOf(kind: "llm-openai" | "llm-anthropic"): Provider {
  return kind === "llm-openai" ? openai : anthropic;
}

/** Characters of the prompt (what the complexity rule and the token estimate read). */
export function promptChars(request: LlmChatRequest): number {
  let chars = 0;
  for (const m of request.messages) {
    chars += m.content?.length ?? 0;
    for (const c of m.toolCalls ?? []) chars += JSON.stringify(c.arguments).length + c.name.length;
  }
  for (const t of request.tools ?? []) chars += t.name.length + (t.description?.length ?? 0) + JSON.stringify(t.parameters).length;
  return chars;
}

/**
 * Tokens a request will cost before the provider says: about four characters a token for the prompt,
 * plus `maxTokens` (what providers' own tokens/min limits reserve too). Corrected by the reported usage.
 */
export function estimateTokens(request: LlmChatRequest): number {
  return Math.ceil(promptChars(request) / 4) + (request.maxTokens ?? 0);
}
