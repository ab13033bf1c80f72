import type { ToolDescriptor } from "@toolbus/protocol";
import type { BackendConfig, CacheConfig } from "./compile.js";

/** How a tool's results are cached: for how long, and by which request headers they vary. */
export interface CacheRule {
  readonly ttlMs: number;
  readonly vary: readonly string[];
}

/**
 * Whether results of `tool` may be cached, and how. Only what is safe: a tool the config marks
 * cacheable, or one that is read-only (its `readOnlyHint`, or `readOnly` in config); never a tool
 * whose annotations are unknown (its list has not been fetched yet) unless the config says so.
 * The router (deciding) and the caller (storing, sharing a flight) both ask this, so they agree.
 */
export function cacheRule(cache: CacheConfig, backend: BackendConfig, tool: string, descriptor: ToolDescriptor | undefined): CacheRule | undefined {
  if (!cache.enabled || !backend.cache.enabled) return undefined;
  const override = Object.hasOwn(backend.policy.tools, tool) ? backend.policy.tools[tool] : undefined;
  const cacheable = override?.cache ?? override?.readOnly ?? descriptor?.annotations?.readOnlyHint ?? false;
  if (!cacheable) return undefined;
  return { ttlMs: override?.cacheTtlMs ?? backend.cache.ttlMs, vary: backend.cache.vary };
}
