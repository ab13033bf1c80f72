import { createHash } from "node:crypto";
import { canonicalJson } from "./canonical-json.js";
import { isBackendName } from "./subjects.js";

/**
 * Cache keys are NATS KV keys, `<backend>.<tool token>.<hash>`, so that one backend's or one tool's
 * entries can be listed with a subject filter (`files.>`, `files.cmVhZA.>`) when they are invalidated.
 *
 * - The tool token is the tool's name in base64url: tool names may hold dots or characters KV keys
 *   refuse, and base64url keeps the name readable to someone who decodes it.
 * - The hash covers the backend, the tool, the canonical JSON of the arguments (key order does not
 *   matter) and the values of the headers a backend's results vary by (a user's identity), so one
 *   user's result is never found under another user's key.
 */
export function cacheKey(backend: string, tool: string, args: Record<string, unknown>, vary: readonly string[] = []): string {
  const hash = createHash("sha256")
    .update(canonicalJson([backend, tool, args, vary]))
    .digest("base64url");
  return `${cacheKeyPrefix(backend, tool)}${hash}`;
}

/** The start of every key of `backend` (and of `tool`, when given): what an invalidation deletes. */
export function cacheKeyPrefix(backend: string, tool?: string): string {
  if (!isBackendName(backend)) throw new TypeError(`invalid backend name ${JSON.stringify(backend)}`);
  return tool === undefined ? `${backend}.` : `${backend}.${toolToken(tool)}.`;
}

/** The tool's name as a KV key token (base64url never holds a dot). */
function toolToken(tool: string): string {
  return Buffer.from(tool, "utf8").toString("base64url");
}

/** The backend and tool a key belongs to, or undefined when it is not a cache key. */
export function parseCacheKey(key: string): { backend: string; tool: string } | undefined {
  const parts = key.split(".");
  if (parts.length !== 3 || !isBackendName(parts[0]!) || parts[1] === "" || parts[2] === "") return undefined;
  return { backend: parts[0]!, tool: Buffer.from(parts[1]!, "base64url").toString("utf8") };
}
