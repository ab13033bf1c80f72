import type { Dispatcher } from "undici";

/** Reading the bodies of undici's dispatcher API: the lean MCP transport's and the LLM endpoints'. */

/** The first `max` bytes of a body as text; the rest is discarded unread. */
export async function readPrefix(body: Dispatcher.ResponseData["body"], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= max) break;
    }
  } catch {
    // A body cut short: what we have is all there is to say.
  } finally {
    discard(body);
  }
  return Buffer.concat(chunks).toString("utf8", 0, Math.min(size, max));
}

/**
 * Stop reading a body and free its connection. undici's body reports being destroyed before its end
 * as an error event ("Request aborted"), which must not surface as an unhandled error.
 */
export function discard(body: Dispatcher.ResponseData["body"]): void {
  body.on("error", () => undefined);
  body.destroy();
}
