import { z } from "zod";
import { ConversationIdSchema } from "./chat.js";
import { BackendNameSchema, ErrorReplySchema } from "./schemas.js";

/**
 * LLM chat over NATS: one request and one reply shape for every provider. The caller of an LLM
 * backend translates them to the provider's wire format (OpenAI-compatible chat completions,
 * Anthropic messages) and back, so a fallback from one kind to the other is invisible to the client.
 */

/** A tool call the model asked for: arguments as parsed JSON (an object). */
export const LlmToolCallSchema = z.object({
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(256),
  arguments: z.record(z.string(), z.unknown()),
});
export type LlmToolCall = z.infer<typeof LlmToolCallSchema>;

/**
 * One message of the conversation. `tool` messages answer a tool call (`toolCallId`); assistant
 * messages may carry tool calls.
 */
export const LlmMessageSchema = z
  .object({
    role: z.enum(["system", "user", "assistant", "tool"]),
    content: z
      .string()
      .max(4 * 1024 * 1024)
      .nullable()
      .default(""),
    toolCalls: z.array(LlmToolCallSchema).max(128).optional(),
    toolCallId: z.string().min(1).max(256).optional(),
  })
  .refine((m) => m.role !== "tool" || m.toolCallId !== undefined, { message: "a tool message needs toolCallId", path: ["toolCallId"] });
export type LlmMessage = z.infer<typeof LlmMessageSchema>;

/** A tool the model may call: its JSON Schema parameters, passed through as-is. */
export const LlmToolSchema = z.object({
  name: z.string().min(1).max(256),
  description: z
    .string()
    .max(16 * 1024)
    .optional(),
  parameters: z.record(z.string(), z.unknown()).default({ type: "object", properties: {} }),
});
export type LlmTool = z.infer<typeof LlmToolSchema>;

/**
 * What the router reads to judge a request's complexity: `analysis` is complex (a long timeout);
 * anything else is judged by the prompt's length and `maxTokens`.
 */
export const LlmIntentSchema = z.enum(["chat", "analysis", "completion"]);

/** Body of `toolbus.v1.llm.chat` (the router picks the backend) and `toolbus.v1.backend.<b>.chat`. */
export const LlmChatRequestSchema = z
  .object({
    /** The backend to call; through the router, `model` alone may pick it (the configured model → backend map). */
    backend: BackendNameSchema.optional(),
    /** The model; without it, the backend's default model (the first it lists). */
    model: z.string().min(1).max(256).optional(),
    messages: z.array(LlmMessageSchema).min(1).max(10_000),
    tools: z.array(LlmToolSchema).max(256).optional(),
    toolChoice: z.union([z.enum(["auto", "none", "required"]), z.object({ name: z.string().min(1).max(256) })]).optional(),
    maxTokens: z.number().int().positive().max(10_000_000).optional(),
    temperature: z.number().min(0).max(2).optional(),
    /** true: chunks arrive as they are generated (LlmStreamChunk messages, then an LlmStreamEnd). */
    stream: z.boolean().default(false),
    intent: LlmIntentSchema.optional(),
    /** Calls that name a conversation are logged in it (user_message, then assistant_message or error). */
    conversationId: ConversationIdSchema.optional(),
  })
  .refine((r) => r.backend !== undefined || r.model !== undefined, { message: "name a backend or a model", path: ["model"] });
export type LlmChatRequest = z.infer<typeof LlmChatRequestSchema>;
export type LlmChatRequestInput = z.input<typeof LlmChatRequestSchema>;

/** Why the model stopped, the same words for every provider. */
export const LlmStopReasonSchema = z.enum(["end", "max_tokens", "tool_calls", "stop_sequence", "content_filter", "other"]);
export type LlmStopReason = z.infer<typeof LlmStopReasonSchema>;

export const LlmUsageSchema = z.object({ inputTokens: z.number().int().nonnegative(), outputTokens: z.number().int().nonnegative() });
export type LlmUsage = z.infer<typeof LlmUsageSchema>;

/** One backend that was tried before the one that answered, and why it did not. */
export const LlmTriedSchema = z.object({ backend: z.string(), code: z.string(), message: z.string() });
export type LlmTried = z.infer<typeof LlmTriedSchema>;

export const LlmMetaSchema = z.object({
  /** The backend that answered. */
  backend: z.string(),
  endpoint: z.string(),
  /** Attempts on this backend (retries before the first chunk included). */
  attempts: z.number().int().nonnegative(),
  durationMs: z.number().nonnegative(),
  /** Backends of the fallback chain that were tried first, in order, with why each gave up. */
  tried: z.array(LlmTriedSchema),
  /** Time to the first chunk of the answer, in ms. */
  firstTokenMs: z.number().nonnegative().optional(),
});
export type LlmMeta = z.infer<typeof LlmMetaSchema>;

/** The answer: the assistant's message, why it stopped, the tokens used, and how it was served. */
export const LlmChatOkReplySchema = z.object({
  ok: z.literal(true),
  model: z.string(),
  message: z.object({ role: z.literal("assistant"), content: z.string(), toolCalls: z.array(LlmToolCallSchema) }),
  stopReason: LlmStopReasonSchema,
  usage: LlmUsageSchema,
  meta: LlmMetaSchema,
  /**
   * Only on the last message of a stream whose text would not fit one NATS message: `message.content`
   * is empty, and the text is what the chunks carried (the Node client puts it back).
   */
  contentOmitted: z.literal(true).optional(),
});
export type LlmChatOkReply = z.infer<typeof LlmChatOkReplySchema>;
export const LlmChatReplySchema = z.discriminatedUnion("ok", [LlmChatOkReplySchema, ErrorReplySchema]);
export type LlmChatReply = z.infer<typeof LlmChatReplySchema>;

/**
 * A piece of a streamed answer: text, or part of a tool call (its `arguments` JSON arrives in pieces,
 * concatenated in `index` order). `seq` counts from 0 and has no gaps: a client that sees one missed a message.
 */
export const LlmDeltaSchema = z.object({
  content: z.string().optional(),
  toolCall: z
    .object({ index: z.number().int().nonnegative(), id: z.string().optional(), name: z.string().optional(), arguments: z.string().optional() })
    .optional(),
});
export type LlmDelta = z.infer<typeof LlmDeltaSchema>;
export const LlmStreamChunkSchema = z.object({ seq: z.number().int().nonnegative(), done: z.literal(false), delta: LlmDeltaSchema });
export type LlmStreamChunk = z.infer<typeof LlmStreamChunkSchema>;

/**
 * The last message of a stream: the whole reply (the assembled message, usage, stop reason, meta), or
 * a typed error. An error after chunks were sent says how much was delivered (`details.delivered`):
 * the stream is not resumed, the client decides what to do with the part it has.
 */
export const LlmStreamEndSchema = z.intersection(z.object({ seq: z.number().int().nonnegative(), done: z.literal(true) }), LlmChatReplySchema);
export type LlmStreamEnd = z.infer<typeof LlmStreamEndSchema>;

/** Published by an LLM caller replica on `toolbus.v1.llm.usage.<backend>`: what it charged to the backend's rate limits (negative: gave back). */
export const LlmUsageShareSchema = z.object({
  workerId: z.string().min(1).max(256),
  requests: z.number().finite(),
  tokens: z.number().finite(),
});
export type LlmUsageShare = z.infer<typeof LlmUsageShareSchema>;

/** How much of a stream reached the client before it failed (in an error's `details.delivered`). */
export interface LlmDelivered {
  chunks: number;
  contentChars: number;
}
