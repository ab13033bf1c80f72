import { ErrorCode, LlmChatOkReplySchema, type LlmChatOkReply, type LlmDelta, type LlmStreamChunk, type LlmToolCall, type WireError } from "@toolbus/protocol";
import { ToolbusError } from "./errors.js";

/** What the client's reply multiplexer hands a stream: each chunk, and a way to stop it. */
export interface StreamSink {
  /** Take a chunk; returns a problem (a chunk was lost) that ends the stream, or undefined. */
  chunk(chunk: LlmStreamChunk): string | undefined;
  /** The multiplexer's way to end the request early (the client stopped reading). */
  bind(stop: (reason: string) => void): void;
}

export function isStreamChunk(body: unknown): body is LlmStreamChunk {
  if (typeof body !== "object" || body === null) return false;
  const b = body as { done?: unknown; seq?: unknown; delta?: unknown };
  return b.done === false && typeof b.seq === "number" && typeof b.delta === "object" && b.delta !== null;
}

/**
 * The last message of a chat: the whole reply, or an error (with `seq` and `done` on a stream's last
 * message, without them when the router or a caller refused the request outright).
 */
export function finalReply(body: unknown, stream: ChatStream | undefined): LlmChatOkReply {
  const b = (body ?? {}) as { ok?: unknown; error?: WireError; seq?: unknown };
  if (b.ok !== true) {
    if (b.ok === false && b.error) throw new ToolbusError(b.error);
    throw ToolbusError.of(ErrorCode.INTERNAL, "the answer is not a chat reply");
  }
  // The last message says how many chunks came before it: fewer here means some were lost.
  if (stream && typeof b.seq === "number" && b.seq !== stream.received)
    throw ToolbusError.of(ErrorCode.INTERNAL, `the stream ended after ${b.seq} chunks, but ${stream.received} arrived`);
  const parsed = LlmChatOkReplySchema.safeParse(body);
  if (!parsed.success) throw ToolbusError.of(ErrorCode.INTERNAL, `the chat reply is malformed: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  // Too long for one message, the text and tool calls came only in the chunks: put them back.
  if (parsed.data.contentOmitted && stream) {
    const { contentOmitted: _, ...reply } = parsed.data;
    return { ...reply, message: { ...reply.message, content: stream.content, toolCalls: stream.toolCalls() } };
  }
  return parsed.data;
}

/**
 * A streamed chat: an async iterable of deltas (`for await (const delta of stream)`), and `result`, the
 * whole reply once the stream has ended. Leaving the loop early cancels the chat, upstream too.
 */
export class ChatStream implements AsyncIterable<LlmDelta>, StreamSink {
  /** The whole reply: the assembled message, usage, stop reason and meta. Rejects with a ToolbusError. */
  result!: Promise<LlmChatOkReply>;
  #queue: LlmDelta[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  #error: unknown;
  #stop: ((reason: string) => void) | undefined;
  #received = 0;
  #content = "";
  readonly #calls = new Map<number, { id: string; name: string; args: string }>();

  /** The text received so far. */
  get content(): string {
    return this.#content;
  }

  /** The tool calls the chunks so far carried, assembled (arguments parsed; broken JSON kept under `_raw`). */
  toolCalls(): LlmToolCall[] {
    return [...this.#calls.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, c]) => {
        let args: Record<string, unknown>;
        try {
          const parsed: unknown = c.args.trim() === "" ? {} : JSON.parse(c.args);
          args = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : { _raw: c.args };
        } catch {
          args = { _raw: c.args };
        }
        return { id: c.id || `call_${index}`, name: c.name || "unknown", arguments: args };
      });
  }

  /** Chunks received so far. */
  get received(): number {
    return this.#received;
  }

  /** @internal */
  settle(result: Promise<LlmChatOkReply>): void {
    this.result = result;
    result.then(
      () => this.#end(undefined),
      (err: unknown) => this.#end(err),
    );
  }

  /** @internal */
  chunk(chunk: LlmStreamChunk): string | undefined {
    if (chunk.seq !== this.#received) return `chunk ${this.#received} of the stream was lost (chunk ${chunk.seq} came next)`;
    this.#received += 1;
    if (chunk.delta.content) this.#content += chunk.delta.content;
    const piece = chunk.delta.toolCall;
    if (piece) {
      const call = this.#calls.get(piece.index) ?? { id: "", name: "", args: "" };
      if (piece.id) call.id = piece.id;
      if (piece.name) call.name = piece.name;
      if (piece.arguments) call.args += piece.arguments;
      this.#calls.set(piece.index, call);
    }
    this.#queue.push(chunk.delta);
    this.#wake?.();
    return undefined;
  }

  /** @internal */
  bind(stop: (reason: string) => void): void {
    this.#stop = stop;
  }

  /** Stop the stream: the chat is cancelled and the upstream request closed. */
  cancel(reason = "the client stopped reading the stream"): void {
    this.#stop?.(reason);
  }

  #end(error: unknown): void {
    this.#ended = true;
    this.#error = error;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<LlmDelta> {
    try {
      for (;;) {
        const next = this.#queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.#ended) {
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      if (!this.#ended) this.cancel();
    }
  }
}
