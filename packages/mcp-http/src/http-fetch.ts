import { setMaxListeners } from "node:events";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import type * as Undici from "undici";
import type { Agent, Response } from "undici";
import { MAX_BACKEND_TEXT, ResponseTooLargeError } from "./faults.js";

export interface GuardedFetchOptions {
  /** Keep-alive connection pool of the endpoint. */
  agent: Agent;
  /** The most bytes one response body may have; the rest is never read. */
  maxResponseBytes: number;
  /**
   * A response streamed as SSE went over `maxResponseBytes`. The SDK reads such a stream on its own,
   * so the pending request would only hear of it at its timeout: this lets the endpoint answer it now.
   */
  onTooLarge(requestId: string | number, seenBytes: number): void;
  /** A request that carried a session id was answered 4xx: `body` is the (clipped) answer. */
  onSessionError?(status: number, body: string, method: string): void;
}

/**
 * The fetch the MCP SDK's streamable HTTP transport uses, with what a gateway needs around it:
 * - connections kept alive in the endpoint's pool;
 * - a signal per request, linked to the SDK's long-lived one and unlinked when the response ends. (Passing
 *   the SDK's signal on leaks a listener per request; `AbortSignal.any([signal])` leaks an entry per
 *   request in the source signal on Node 20, ~70 bytes each, never pruned.)
 * - a bounded body: at most `maxResponseBytes` of a result, and only the first few hundred bytes of an
 *   error (the SDK copies an error body whole into its message).
 */
/** undici's fetch, loaded on first use: the transport that needs it is the SDK's (the fallback), and undici is a large module. */
let undici: Promise<typeof Undici> | undefined;

export function guardedFetch(options: GuardedFetchOptions): FetchLike {
  const { agent, maxResponseBytes } = options;
  /**
   * The requests whose answer is still being read, by JSON-RPC id. A server stops answering a request
   * it was told to cancel but keeps its stream open, which would hold a pooled connection forever: when
   * the SDK sends `notifications/cancelled`, the stream of that request is cut here.
   */
  const reading = new Map<string, AbortController>();
  return async (url, init) => {
    const outer = init?.signal ?? undefined;
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(outer?.reason);
    if (outer) {
      if (outer.aborted) controller.abort(outer.reason);
      else {
        sized(outer);
        outer.addEventListener("abort", onAbort, { once: true });
      }
    }
    const body = typeof init?.body === "string" ? init.body : undefined;
    if (body !== undefined && body.includes('"notifications/cancelled"')) reading.get(cancelledIdOf(body) ?? "")?.abort();
    const id = body === undefined ? undefined : requestIdOf(body);
    if (id !== undefined) reading.set(id, controller);
    const unlink = (): void => {
      outer?.removeEventListener("abort", onAbort);
      if (id !== undefined && reading.get(id) === controller) reading.delete(id);
    };
    let response: Response;
    const { fetch: undiciFetch, Response } = await (undici ??= import("undici"));
    const rebuilt = (r: Response, body: ReadableStream<Uint8Array> | string | null): globalThis.Response =>
      new Response(body, { status: r.status, statusText: r.statusText, headers: r.headers }) as unknown as globalThis.Response;
    try {
      response = await undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent, signal: controller.signal });
    } catch (err) {
      unlink();
      throw err;
    }
    const method = init?.method ?? "GET";
    if (!response.ok) {
      const text = await readPrefix(response, MAX_BACKEND_TEXT + 1);
      unlink();
      if (response.status >= 400 && response.status < 500 && hasSession(init?.headers)) options.onSessionError?.(response.status, text, method);
      return rebuilt(response, NULL_BODY.has(response.status) ? null : text);
    }
    if (!response.body) {
      unlink();
      return response as unknown as globalThis.Response;
    }
    const sse = (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
    const declared = Number(response.headers.get("content-length") ?? NaN);
    if (declared > maxResponseBytes) {
      // Said up front: do not read a byte of it.
      await response.body.cancel().catch(() => undefined);
      unlink();
      throw new ResponseTooLargeError(declared, maxResponseBytes);
    }
    // A POST's event stream loses its event ids: the SDK would otherwise "resume" a stream toolbus cut
    // (after a cancel) with a GET that the server holds open for an answer that never comes.
    const stripIds = sse && method === "POST" ? idStripper() : undefined;
    const capped = guarded(response.body, { max: maxResponseBytes, perEvent: sse, transform: stripIds }, unlink, (seen) => {
      controller.abort();
      if (sse && id !== undefined) options.onTooLarge(JSON.parse(id) as string | number, seen);
    });
    return rebuilt(response, capped);
  };
}

/** Statuses whose Response may carry no body. */
const NULL_BODY = new Set([101, 204, 205, 304]);

/**
 * The SDK's signal carries one listener per request in flight (each removed when its response ends,
 * which the soak test checks), so Node's default warning at 11 would fire on any busy endpoint.
 */
const SIZED = new WeakSet<AbortSignal>();
const LISTENERS_PER_SIGNAL = 4_096;
function sized(signal: AbortSignal): void {
  if (SIZED.has(signal)) return;
  SIZED.add(signal);
  setMaxListeners(LISTENERS_PER_SIGNAL, signal);
}

function hasSession(headers: unknown): boolean {
  if (!headers) return false;
  if (typeof (headers as Headers).has === "function") return (headers as Headers).has("mcp-session-id");
  return Object.keys(headers as Record<string, string>).some((k) => k.toLowerCase() === "mcp-session-id");
}

/**
 * The JSON-RPC id of a request the SDK sends (as JSON text, to compare with a cancel's `requestId`),
 * read from the end of the body without parsing it: the SDK writes `{...,"jsonrpc":"2.0","id":N}`.
 * Undefined for a notification or a response.
 */
function requestIdOf(body: string): string | undefined {
  if (!body.endsWith("}")) return undefined;
  const match = /"id":(-?\d+|"(?:[^"\\]|\\.)*")\}$/.exec(body.slice(-80));
  return match?.[1];
}

/** The id a `notifications/cancelled` names, as JSON text. */
function cancelledIdOf(body: string): string | undefined {
  try {
    const message = JSON.parse(body) as { method?: string; params?: { requestId?: string | number } };
    return message.method === "notifications/cancelled" && message.params?.requestId !== undefined ? JSON.stringify(message.params.requestId) : undefined;
  } catch {
    return undefined;
  }
}

/** The first `max` bytes of a body as text; the rest is discarded unread. */
async function readPrefix(response: Response, max: number): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // A body cut short: what we have is all there is to say.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).toString("utf8", 0, Math.min(size, max));
}

interface GuardOptions {
  /** The most bytes passed on (of one SSE event, with `perEvent`; of the whole body otherwise). */
  max: number;
  /** Count per SSE event: an event stream may run for the session's life, only each message is bounded. */
  perEvent: boolean;
  transform?: (chunk: Buffer) => Buffer;
}

/** `source`, passed through (and transformed) until too many bytes; past that the stream errors with ResponseTooLargeError. */
function guarded(source: ReadableStream<Uint8Array>, options: GuardOptions, done: () => void, onOver: (seen: number) => void): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let seen = 0;
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done: end, value } = await reader.read();
        if (end) {
          finish();
          controller.close();
          return;
        }
        const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        if (options.perEvent) {
          // Bytes since the last event boundary (a blank line).
          const boundary = chunk.lastIndexOf("\n\n");
          seen = boundary === -1 ? seen + chunk.length : chunk.length - boundary - 2;
        } else {
          seen += chunk.length;
        }
        if (seen > options.max) {
          finish();
          void reader.cancel().catch(() => undefined);
          controller.error(new ResponseTooLargeError(seen, options.max));
          onOver(seen);
          return;
        }
        const out = options.transform ? options.transform(chunk) : chunk;
        if (out.length > 0) controller.enqueue(out);
      } catch (err) {
        finish();
        controller.error(err);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  });
}

/**
 * Drops the `id:` lines of an event stream, across chunk boundaries: an unfinished last line that may
 * be one is held back until its end is seen. Whole lines only, so a data line that merely contains
 * "id:" is left alone.
 */
export function idStripper(): (chunk: Buffer) => Buffer {
  let carry: Buffer | undefined;
  let lineStart = true;
  const isIdLine = (b: Buffer, at: number): boolean => b[at] === 0x69 && b[at + 1] === 0x64 && b[at + 2] === 0x3a;
  const mayBeIdLine = (tail: Buffer): boolean => (tail.length < 3 ? Buffer.from("id:").subarray(0, tail.length).equals(tail) : isIdLine(tail, 0));
  return (input) => {
    const buf = carry ? Buffer.concat([carry, input]) : input;
    const atStart = carry ? true : lineStart;
    carry = undefined;
    const lastNl = buf.lastIndexOf(10);
    const tailStart = lastNl + 1;
    let body = buf;
    if (tailStart < buf.length && (lastNl >= 0 || atStart) && mayBeIdLine(buf.subarray(tailStart))) {
      carry = Buffer.from(buf.subarray(tailStart));
      body = buf.subarray(0, tailStart);
    }
    lineStart = body.length > 0 ? body[body.length - 1] === 10 : atStart;
    if (body.indexOf("id:") === -1) return body;
    const kept: Buffer[] = [];
    let pos = 0;
    let atLine = atStart;
    while (pos < body.length) {
      const nl = body.indexOf(10, pos);
      const end = nl === -1 ? body.length : nl + 1;
      if (!(atLine && isIdLine(body, pos))) kept.push(body.subarray(pos, end));
      atLine = nl !== -1;
      pos = end;
    }
    return kept.length === 1 ? kept[0]! : Buffer.concat(kept);
  };
}
