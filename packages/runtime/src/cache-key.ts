import { Match, type MsgHdrs } from "nats";
import type { CacheRule } from "@toolbus/config";
import { cacheKey } from "@toolbus/protocol";

/**
 * The cache key of a call under `rule`, with the values of the headers its results vary by (matched
 * without regard to case, as HTTP does). undefined when one of those headers is missing: a call that
 * does not say who it is for is not cached at all, rather than shared by everyone who does not say.
 */
export function cacheKeyFor(
  request: { backend: string; tool: string; arguments: Record<string, unknown> },
  rule: CacheRule,
  headers: MsgHdrs | undefined,
): string | undefined {
  const vary: string[] = [];
  for (const name of rule.vary) {
    const value = headers?.get(name, Match.IgnoreCase);
    if (!value) return undefined;
    vary.push(value);
  }
  return cacheKey(request.backend, request.tool, request.arguments, vary);
}
