import { setMaxListeners } from "node:events";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { Response, fetch as undiciFetch, type Agent } from "undici";
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
export function guardedFetch(options: GuardedFetchOptions): FetchLike {
  const { agent, maxResponseBytes } = options;
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
    const unlink = (): void => outer?.removeEventListener("abort", onAbort);
    let response: Response;
    try {
      response = await undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent, signal: controller.signal });
    } catch (err) {
      unlink();
      throw err;
    }
    const method = init?.method ?? "GET";
    if (!response.ok) {
      const body = await readPrefix(response, MAX_BACKEND_TEXT + 1);
      unlink();
      if (response.status >= 400 && response.status < 500 && hasSession(init?.headers)) options.onSessionError?.(response.status, body, method);
      return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers }) as unknown as globalThis.Response;
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
    const body = capped(response.body, maxResponseBytes, unlink, (seen) => {
      controller.abort();
      if (sse) {
        const id = requestIdOf(init?.body);
        if (id !== undefined) options.onTooLarge(id, seen);
      }
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers }) as unknown as globalThis.Response;
  };
}

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

/** The JSON-RPC id of a request body (parsed only on the rare oversized answer). */
function requestIdOf(body: unknown): string | number | undefined {
  if (typeof body !== "string") return undefined;
  try {
    const message = JSON.parse(body) as { id?: string | number };
    return message.id;
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

/** `source`, passed through until `max` bytes; past that the stream errors with ResponseTooLargeError. */
function capped(source: ReadableStream<Uint8Array>, max: number, done: () => void, onOver: (seen: number) => void): ReadableStream<Uint8Array> {
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
        seen += value.byteLength;
        if (seen > max) {
          finish();
          void reader.cancel().catch(() => undefined);
          controller.error(new ResponseTooLargeError(seen, max));
          onOver(seen);
          return;
        }
        controller.enqueue(value);
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
