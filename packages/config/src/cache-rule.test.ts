import { describe, expect, it } from "vitest";
import type { ToolDescriptor } from "@toolbus/protocol";
import { cacheRule, compileConfig, type ConfigError } from "./index.js";

const compile = (raw: Record<string, unknown>) => compileConfig(raw, { baseDir: "/", source: "(test)" });
const tool = (readOnlyHint?: boolean): ToolDescriptor => ({
  name: "t",
  inputSchema: { type: "object" },
  ...(readOnlyHint === undefined ? {} : { annotations: { readOnlyHint } }),
});

describe("cacheRule: what is cached, and for how long", () => {
  const config = compile({
    cache: { ttl: "2m" },
    backends: {
      b: {
        kind: "mcp-stdio",
        command: "x",
        cache: { ttl: "30s", vary: ["X-User"] },
        tools: { forced: { cache: true, cacheTtl: "1s" }, never: { cache: false }, declared: { readOnly: true } },
      },
      plain: { kind: "mcp-stdio", command: "x" },
      off: { kind: "mcp-stdio", command: "x", cache: { enabled: false } },
    },
  });
  const rule = (backend: string, name: string, descriptor: ToolDescriptor | undefined) => cacheRule(config.cache, config.backends[backend]!, name, descriptor);

  it("caches read-only tools only, with the backend's TTL and vary headers", () => {
    expect(rule("b", "t", tool(true))).toEqual({ ttlMs: 30_000, vary: ["X-User"] });
    expect(rule("plain", "t", tool(true))).toEqual({ ttlMs: 120_000, vary: [] });
    expect(rule("b", "t", tool(false))).toBeUndefined();
    expect(rule("b", "t", tool())).toBeUndefined();
    // A tool list not fetched yet: nothing is known to be read-only.
    expect(rule("b", "t", undefined)).toBeUndefined();
  });

  it("lets the config decide per tool, and turn caching off per backend or everywhere", () => {
    expect(rule("b", "forced", undefined)).toEqual({ ttlMs: 1_000, vary: ["X-User"] });
    expect(rule("b", "never", tool(true))).toBeUndefined();
    expect(rule("b", "declared", tool(false))).toEqual({ ttlMs: 30_000, vary: ["X-User"] });
    expect(rule("off", "t", tool(true))).toBeUndefined();
    const disabled = compile({ cache: { enabled: false }, backends: { plain: { kind: "mcp-stdio", command: "x" } } });
    expect(cacheRule(disabled.cache, disabled.backends.plain!, "t", tool(true))).toBeUndefined();
    // An inherited property name is not a tool override.
    expect(rule("plain", "constructor", tool(true))).toEqual({ ttlMs: 120_000, vary: [] });
  });

  it("has defaults that need no config, and names every bad setting", () => {
    expect(compile({}).cache).toEqual({
      enabled: true,
      ttlMs: 300_000,
      maxEntries: 10_000,
      maxBytes: 64 * 1024 * 1024,
      maxValueBytes: 256 * 1024,
      shared: { enabled: true, ttlMs: 3_600_000, maxBytes: 256 * 1024 * 1024, timeoutMs: 50 },
      handoffTimeoutMs: 250,
    });
    let problems: readonly string[] = [];
    try {
      compile({
        cache: { handoffTimeout: "40ms", maxEntries: 0, shared: { ttl: "10ms" } },
        backends: { b: { kind: "mcp-stdio", command: "x", cache: { vary: ["bad header"] } } },
      });
    } catch (err) {
      problems = (err as ConfigError).problems;
    }
    expect(problems).toEqual([
      "cache.maxEntries: must be at least 1",
      "cache.shared.ttl: must be at least 1s",
      "backends.b.cache.vary.0: must be an HTTP header name",
    ]);
    expect(() => compile({ cache: { handoffTimeout: "99ms" } })).toThrow(/cache.handoffTimeout: must be at least twice cache.shared.timeout \(100ms\)/);
    expect(compile({ cache: { handoffTimeout: "100ms" } }).cache.handoffTimeoutMs).toBe(100);
  });
});
