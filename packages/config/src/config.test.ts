import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { formatDuration } from "./duration.js";
import { inspect } from "node:util";
import { ConfigError, PROFILE_DEFAULTS, compileConfig, isLlmBackend, loadConfig, parseDuration, type LlmBackendConfig, type Profile } from "./index.js";

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function file(text: string, name = "toolbus.yaml"): string {
  const dir = mkdtempSync(join(tmpdir(), "toolbus-config-"));
  tempDirs.push(dir);
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const compile = (raw: Record<string, unknown>) => compileConfig(raw, { baseDir: "/", source: "(test)" });

/** The problems compiling `raw` reports (none if it compiles). */
function problemsOf(raw: Record<string, unknown>): readonly string[] {
  try {
    compile(raw);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("loadConfig", () => {
  it("compiles a file with profile defaults, durations in ms, paths relative to the file, frozen", () => {
    const path = file(`
profile: cloud
backends:
  fs:
    kind: mcp-stdio
    command: ./bin/server
    args: [--stdio]
    timeouts: { call: 90s }
  web:
    kind: mcp-http
    url: http://127.0.0.1:3001/mcp
`);
    const config = loadConfig({ file: path });
    expect(config.profile).toBe("cloud");
    const fs = config.backends.fs!;
    expect(fs).toMatchObject({ kind: "mcp-stdio", pool: 1, callTimeoutMs: 90_000, connectTimeoutMs: PROFILE_DEFAULTS.cloud.connectTimeoutMs });
    expect(fs.kind === "mcp-stdio" && fs.command).toBe(join(path, "..", "bin/server"));
    expect(config.backends.web).toMatchObject({ kind: "mcp-http", connections: 16, callTimeoutMs: 60_000 });
    expect(config.limits.defaultBudgetMs).toBe(PROFILE_DEFAULTS.cloud.defaultBudgetMs);
    expect(Object.isFrozen(config) && Object.isFrozen(config.backends.fs)).toBe(true);
  });

  it("layers flags over environment over file", () => {
    const path = file("profile: cloud\nnats: { servers: ['nats://file:4222'] }\nadmin: { port: 1 }\n");
    const env = { TOOLBUS_NATS_URL: "nats://env:4222,nats://env2:4222", TOOLBUS_PROFILE: "hybrid", TOOLBUS_ADMIN_PORT: "2", TOOLBUS_NATS_TOKEN: "s3cret" };
    const fromEnv = loadConfig({ file: path, env });
    expect(fromEnv.nats.servers).toEqual(["nats://env:4222", "nats://env2:4222"]);
    expect(fromEnv.profile).toBe("hybrid");
    expect(fromEnv.admin.port).toBe(2);
    expect(fromEnv.nats.token).toBe("s3cret");
    // Streams and buckets keep one replica unless the cluster has more nodes (TOOLBUS_NATS_REPLICAS, as the prod overlay sets).
    expect(fromEnv.nats.replicas).toBe(1);
    expect(loadConfig({ file: path, env: { TOOLBUS_NATS_REPLICAS: "3" } }).nats.replicas).toBe(3);
    expect(() => loadConfig({ file: path, env: { TOOLBUS_NATS_REPLICAS: "7" } })).toThrow(/nats\.replicas/);
    const fromFlags = loadConfig({ file: path, env, flags: { natsUrl: "nats://flag:4222", profile: "local", adminPort: 3 } });
    expect(fromFlags.nats.servers).toEqual(["nats://flag:4222"]);
    expect(fromFlags.profile).toBe("local");
    expect(fromFlags.admin.port).toBe(3);
  });

  it("lists every problem by path", () => {
    const path = file(
      JSON.stringify({
        profile: "laptop",
        heartbeat: "soon",
        backends: { files: { kind: "mcp-http", url: "nope" }, "Bad.Name": { kind: "mcp-stdio", command: "x" }, odd: { kind: "smtp" } },
      }),
      "toolbus.json",
    );
    let error: unknown;
    try {
      loadConfig({ file: path, env: { TOOLBUS_ADMIN_PORT: "http" } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^profile: /),
        expect.stringMatching(/^heartbeat: not a duration/),
        expect.stringMatching(/^backends\.files\.url: Invalid URL/),
        expect.stringMatching(/^backends\.Bad\.Name: |^backends: /),
        expect.stringMatching(/^backends\.odd\.kind: unknown kind/),
        expect.stringMatching(/^admin\.port: /),
      ]),
    );
    expect(problems).toHaveLength(6);
  });

  it("works with no file at all", () => {
    const config = loadConfig({ env: {} });
    expect(config.nats.servers).toEqual(["nats://127.0.0.1:4222"]);
    expect(config.backends).toEqual({});
  });
});

describe("parseDuration", () => {
  it.each([
    ["250ms", 250],
    ["5s", 5_000],
    ["1.5m", 90_000],
    ["2h", 7_200_000],
    ["42", 42],
    [42, 42],
  ])("%j → %d ms", (input, ms) => expect(parseDuration(input)).toBe(ms));
  it.each(["5 seconds", "-1s", "s", ""])("rejects %j", (input) => expect(parseDuration(input)).toBeUndefined());
});

describe("formatDuration", () => {
  it.each([
    [0, "0ms"],
    [10, "10ms"],
    [1_500, "1500ms"],
    [1_000, "1s"],
    [120_000, "2m"],
    [86_400_000, "24h"],
  ])("%d ms → %s, which parses back", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toBe(ms);
  });
});

describe("floors and ceilings", () => {
  const stdio = (extra: Record<string, unknown>) => ({ backends: { x: { kind: "mcp-stdio", command: "x", ...extra } } });
  const http = (extra: Record<string, unknown>) => ({ backends: { x: { kind: "mcp-http", url: "http://127.0.0.1:1/mcp", ...extra } } });

  it.each<[string, Record<string, unknown>, string]>([
    ["heartbeat 0 (a busy loop)", { heartbeat: 0 }, "heartbeat: must be at least 100ms"],
    ["heartbeat over an hour", { heartbeat: "2h" }, "heartbeat: must be at most 1h"],
    ["shutdownGrace over an hour", { shutdownGrace: "61m" }, "shutdownGrace: must be at most 1h"],
    ["call timeout 0 (every call times out)", stdio({ timeouts: { call: 0 } }), "backends.x.timeouts.call: must be at least 10ms"],
    ["call timeout over a day", stdio({ timeouts: { call: "25h" } }), "backends.x.timeouts.call: must be at most 24h"],
    ["connect timeout under 100ms", stdio({ timeouts: { connect: "99ms" } }), "backends.x.timeouts.connect: must be at least 100ms"],
    ["adaptive minimum 0", stdio({ timeouts: { min: 0 } }), "backends.x.timeouts.min: must be at least 1ms"],
    ["adaptive minimum above the call timeout", stdio({ timeouts: { min: "2s", call: "1s" } }), "backends.x.timeouts.min: must be at most call (1s)"],
    ["minSamples beyond the samples kept", stdio({ timeouts: { minSamples: 257 } }), "backends.x.timeouts.minSamples: must be at most 256"],
    ["breaker window under 100ms", stdio({ breaker: { window: 99 } }), "backends.x.breaker.window: must be at least 100ms"],
    ["breaker recovery 0", stdio({ breaker: { recovery: 0 } }), "backends.x.breaker.recovery: must be at least 10ms"],
    ["fractional breaker volume", stdio({ breaker: { volume: 1.5 } }), "backends.x.breaker.volume: must be a whole number"],
    ["backoff over ten minutes", stdio({ retry: { initialBackoff: "11m" } }), "backends.x.retry.initialBackoff: must be at most 10m"],
    [
      "maxBackoff below initialBackoff",
      stdio({ retry: { initialBackoff: 200, maxBackoff: 100 } }),
      "backends.x.retry.maxBackoff: must be at least initialBackoff (200ms)",
    ],
    [
      "maxBackoff below the profile's initialBackoff",
      stdio({ retry: { maxBackoff: "10ms" } }),
      "backends.x.retry.maxBackoff: must be at least initialBackoff (50ms, the local profile's default)",
    ],
    [
      "initialBackoff above the profile's maxBackoff",
      { profile: "cloud", ...stdio({ retry: { initialBackoff: "6s" } }) },
      "backends.x.retry.initialBackoff: must be at most maxBackoff (5s, the cloud profile's default)",
    ],
    ["rate 0", stdio({ rateLimit: { rate: 0 } }), "backends.x.rateLimit.rate: must be more than 0 (calls per second; leave rateLimit out for no limit)"],
    ["burst 0", stdio({ rateLimit: { rate: 1, burst: 0 } }), "backends.x.rateLimit.burst: must be at least 1"],
    ["bulkhead of 0", stdio({ bulkhead: { maxConcurrent: 0 } }), "backends.x.bulkhead.maxConcurrent: must be at least 1"],
    ["negative queue", stdio({ bulkhead: { maxQueue: -1 } }), "backends.x.bulkhead.maxQueue: must be at least 0"],
    ["pool of 0", stdio({ pool: 0 }), "backends.x.pool: must be at least 1"],
    ["pool over 64", stdio({ pool: 65 }), "backends.x.pool: must be at most 64"],
    ["one connection (the server's event stream holds it)", http({ connections: 1 }), "backends.x.connections: must be at least 2"],
    ["max budget 0", { limits: { maxBudget: 0 } }, "limits.maxBudget: must be at least 10ms"],
    ["default budget 0", { limits: { defaultBudget: 0 } }, "limits.defaultBudget: must be at least 10ms"],
    ["default budget above the max", { limits: { defaultBudget: "20m" } }, "limits.defaultBudget: must be at most maxBudget (15m, the default)"],
    [
      "max budget below the profile's default budget",
      { limits: { maxBudget: "10s" } },
      "limits.maxBudget: must be at least defaultBudget (30s, the local profile's default)",
    ],
    ["tiny request limit", { limits: { maxRequestBytes: 1023 } }, "limits.maxRequestBytes: must be at least 1024 bytes"],
  ])("refuses %s, naming the path and the bound", (_what, raw, problem) => {
    expect(problemsOf(raw)).toEqual([problem]);
  });

  it("lists every problem at once, each by path", () => {
    expect(() => compile({ heartbeat: 0, ...stdio({ timeouts: { call: 0 } }) })).toThrow(
      /heartbeat: must be at least 100ms\n.*backends\.x\.timeouts\.call: must be at least 10ms/,
    );
  });

  it("accepts every value at its floor", () => {
    const config = compile({
      heartbeat: 100,
      shutdownGrace: 0,
      limits: { maxRequestBytes: 1024, maxBudget: 10, defaultBudget: 10 },
      ...stdio({
        pool: 1,
        timeouts: { connect: 100, call: 10, min: 1, multiplier: 1, minSamples: 1 },
        breaker: { volume: 1, errorPercentage: 1, window: 100, recovery: 10 },
        retry: { maxRetries: 0, initialBackoff: 0, maxBackoff: 0, budgetRatio: 0, budgetReserve: 0 },
        rateLimit: { rate: 0.001, burst: 1 },
        bulkhead: { maxConcurrent: 1, maxQueue: 0 },
      }),
    });
    expect(config).toMatchObject({ heartbeatMs: 100, shutdownGraceMs: 0, limits: { maxRequestBytes: 1024, maxBudgetMs: 10, defaultBudgetMs: 10 } });
    expect(config.backends.x).toMatchObject({
      pool: 1,
      connectTimeoutMs: 100,
      callTimeoutMs: 10,
      policy: {
        adaptive: { minMs: 1, multiplier: 1, minSamples: 1 },
        breaker: { volumeThreshold: 1, errorPercentage: 1, windowMs: 100, recoveryMs: 10 },
        retry: { maxRetries: 0, initialBackoffMs: 0, maxBackoffMs: 0, budgetRatio: 0, budgetReserve: 0 },
        rateLimit: { ratePerSec: 0.001, burst: 1 },
        bulkhead: { maxConcurrent: 1, maxQueue: 0 },
      },
    });
    expect(problemsOf(http({ connections: 2 }))).toEqual([]);
  });

  it("accepts every value at its ceiling", () => {
    const config = compile({
      heartbeat: "1h",
      shutdownGrace: "1h",
      limits: { maxRequestBytes: 64 * 1024 * 1024, maxBudget: "24h", defaultBudget: "24h" },
      ...stdio({
        pool: 64,
        timeouts: { connect: "10m", call: "24h", min: "24h", multiplier: 100, minSamples: 256 },
        breaker: { errorPercentage: 100, window: "24h", recovery: "24h" },
        retry: { maxRetries: 10, initialBackoff: "10m", maxBackoff: "10m", budgetRatio: 1 },
      }),
    });
    expect(config).toMatchObject({ heartbeatMs: 3_600_000, shutdownGraceMs: 3_600_000, limits: { maxBudgetMs: 86_400_000 } });
    expect(config.backends.x).toMatchObject({ pool: 64, connectTimeoutMs: 600_000, callTimeoutMs: 86_400_000 });
    expect(problemsOf(http({ connections: 1024 }))).toEqual([]);
  });

  it.each(Object.keys(PROFILE_DEFAULTS) as Profile[])("the %s profile's defaults are within bounds when written out", (profile) => {
    const d = PROFILE_DEFAULTS[profile];
    const raw = {
      profile,
      heartbeat: d.heartbeatMs,
      limits: { defaultBudget: d.defaultBudgetMs },
      ...stdio({
        timeouts: {
          connect: d.connectTimeoutMs,
          call: d.callTimeoutMs,
          min: d.adaptive.minMs,
          multiplier: d.adaptive.multiplier,
          minSamples: d.adaptive.minSamples,
        },
        breaker: { volume: d.breaker.volumeThreshold, errorPercentage: d.breaker.errorPercentage, window: d.breaker.windowMs, recovery: d.breaker.recoveryMs },
        retry: {
          maxRetries: d.retry.maxRetries,
          initialBackoff: d.retry.initialBackoffMs,
          maxBackoff: d.retry.maxBackoffMs,
          budgetRatio: d.retry.budgetRatio,
          budgetReserve: d.retry.budgetReserve,
        },
        bulkhead: d.bulkhead,
      }),
    };
    expect(problemsOf(raw)).toEqual([]);
  });
});

describe("policies", () => {
  it("come from the profile, each overridable per backend", () => {
    const path = file(`
profile: local
backends:
  plain: { kind: mcp-stdio, command: x }
  tuned:
    kind: mcp-http
    urls: [http://127.0.0.1:1/mcp, http://127.0.0.1:2/mcp]
    breaker: { volume: 10, recovery: 1m }
    retry: { maxRetries: 0 }
    rateLimit: { rate: 12 }
    bulkhead: { maxConcurrent: 4, maxQueue: 0 }
    timeouts: { call: 2s, min: 10ms, multiplier: 3 }
    tools: { write-file: { idempotent: true } }
`);
    const config = loadConfig({ file: path });
    const local = PROFILE_DEFAULTS.local;
    expect(config.backends.plain!.policy).toEqual({
      enabled: true,
      breaker: local.breaker,
      retry: local.retry,
      rateLimit: undefined,
      bulkhead: local.bulkhead,
      adaptive: local.adaptive,
      tools: {},
    });
    const tuned = config.backends.tuned!;
    expect(tuned.kind === "mcp-http" && tuned.urls).toEqual(["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"]);
    expect(tuned.policy).toMatchObject({
      breaker: { volumeThreshold: 10, errorPercentage: 50, recoveryMs: 60_000 },
      retry: { maxRetries: 0, initialBackoffMs: 50 },
      rateLimit: { ratePerSec: 12, burst: 1 },
      bulkhead: { maxConcurrent: 4, maxQueue: 0 },
      adaptive: { minMs: 10, multiplier: 3 },
      tools: { "write-file": { idempotent: true } },
    });
    expect(tuned.callTimeoutMs).toBe(2_000);
  });

  it("an HTTP backend needs exactly one of url and urls", () => {
    const path = file("backends:\n  a: { kind: mcp-http }\n  b: { kind: mcp-http, url: 'http://x/mcp', urls: ['http://y/mcp'] }\n");
    expect(() => loadConfig({ file: path })).toThrow(/backends\.a\.url: set exactly one of url or urls[\s\S]*backends\.b\.url: set exactly one/);
  });
});

describe("mcp-http transport", () => {
  it("is lean unless the backend, mcpHttp.transport or TOOLBUS_MCP_HTTP_TRANSPORT says sdk", () => {
    const backends = { a: { kind: "mcp-http", url: "http://127.0.0.1:1/mcp" }, b: { kind: "mcp-http", url: "http://127.0.0.1:2/mcp", transport: "lean" } };
    const kinds = (c: ReturnType<typeof compile>) => Object.values(c.backends).map((b) => (b as { transport: string }).transport);
    expect(kinds(compile({ backends }))).toEqual(["lean", "lean"]);
    expect(kinds(compile({ backends, mcpHttp: { transport: "sdk" } }))).toEqual(["sdk", "lean"]);
    expect(kinds(loadConfig({ file: file(JSON.stringify({ backends }), "t.json"), env: { TOOLBUS_MCP_HTTP_TRANSPORT: "sdk" } }))).toEqual(["sdk", "lean"]);
    expect(problemsOf({ backends: { a: { ...backends.a, transport: "fetch" } } })[0]).toMatch(/^backends\.a\.transport:/);
  });
});

describe("LLM backends", () => {
  const llm = (extra: Record<string, unknown> = {}) => ({ kind: "llm-openai", url: "http://127.0.0.1:1234/v1/", models: ["qwen"], ...extra });

  it("compile with the seed's defaults: 60 s simple, 180 s complex, a pool of 10, the base URL without its trailing slash", () => {
    const config = compile({
      backends: { lmstudio: llm({ fallbacks: ["claude"] }), claude: { kind: "llm-anthropic", url: "https://api.example.com/v1", models: ["claude-x"] } },
    });
    const b = config.backends.lmstudio as LlmBackendConfig;
    expect(isLlmBackend(b)).toBe(true);
    expect(b).toMatchObject({
      kind: "llm-openai",
      urls: ["http://127.0.0.1:1234/v1"],
      models: ["qwen"],
      fallbacks: ["claude"],
      connections: 10,
      callTimeoutMs: 60_000,
      apiKey: undefined,
      llm: {
        complexTimeoutMs: 180_000,
        firstTokenTimeoutMs: 60_000,
        idleTimeoutMs: 30_000,
        tokensPerMinute: undefined,
        complexity: { promptChars: 8000, maxTokens: 2000 },
      },
    });
    expect(b.policy.rateLimit).toBeUndefined();
    const limited = compile({
      backends: {
        a: llm({ rateLimit: { rate: 12, burst: 12, tokensPerMinute: 90_000 }, timeouts: { call: "10s", complex: "30s", firstToken: "5s", idle: "2s" } }),
      },
    }).backends.a as LlmBackendConfig;
    expect(limited.policy.rateLimit).toEqual({ ratePerSec: 12, burst: 12 });
    expect(limited).toMatchObject({
      callTimeoutMs: 10_000,
      llm: { complexTimeoutMs: 30_000, firstTokenTimeoutMs: 5_000, idleTimeoutMs: 2_000, tokensPerMinute: 90_000 },
    });
  });

  it("refuses fallbacks to nowhere, to itself or to an MCP backend, a complex timeout below the simple one, and a literal key", () => {
    expect(
      problemsOf({
        backends: {
          a: llm({ fallbacks: ["a", "missing", "tools"], timeouts: { call: "90s", complex: "60s" } }),
          tools: { kind: "mcp-stdio", command: "x" },
        },
      }),
    ).toEqual([
      "backends.a.timeouts.complex: must be at least call (90s)",
      "backends.a.fallbacks.0: a backend cannot fall back to itself",
      'backends.a.fallbacks.1: no backend "missing" is configured',
      'backends.a.fallbacks.2: "tools" is not an LLM backend',
    ]);
    expect(problemsOf({ backends: { a: llm({ apiKey: "sk-literal" }) } })).toEqual([
      'backends.a.apiKey: expected { env: "VARIABLE" } or { file: "path" } (never the key itself)',
    ]);
    expect(problemsOf({ backends: { a: llm({ models: [] }) } })[0]).toMatch(/^backends\.a\.models:/);
  });

  it("per-model fallback chains name configured LLM backends and a model one of them serves", () => {
    const backends = { a: llm(), b: llm({ models: ["other"] }), tools: { kind: "mcp-stdio", command: "x" } };
    expect(compile({ backends, llm: { fallbacks: { qwen: ["b"] } } }).llm.fallbacks).toEqual({ qwen: ["b"] });
    expect(problemsOf({ backends, llm: { fallbacks: { nobody: ["b"], qwen: ["zzz", "tools"] } } })).toEqual([
      'llm.fallbacks.nobody: no LLM backend lists model "nobody" in its models',
      'llm.fallbacks.qwen.0: no backend "zzz" is configured',
      'llm.fallbacks.qwen.1: "tools" is not an LLM backend',
    ]);
  });

  it("reads the API key from the environment or a file; it never prints", () => {
    const keyFile = file("sk-from-file\n", "key");
    const config = compileConfig(
      { backends: { a: llm({ apiKey: { env: "A_KEY" } }), b: llm({ apiKey: { file: keyFile } }) } },
      { baseDir: "/", source: "(test)", env: { A_KEY: "sk-from-env" } },
    );
    const a = config.backends.a as LlmBackendConfig;
    const b = config.backends.b as LlmBackendConfig;
    expect(a.apiKey!.reveal()).toBe("sk-from-env");
    expect(b.apiKey!.reveal()).toBe("sk-from-file");
    const printed = [JSON.stringify(config), String(a.apiKey), `${b.apiKey}`, inspect(config, { depth: 10 })].join("\n");
    expect(printed).not.toMatch(/sk-from/);
    expect(printed).toMatch(/redacted/);
  });

  it("a missing key fails the config, unless keys are read when used (a client command)", () => {
    const raw = { backends: { a: llm({ apiKey: { env: "NOT_SET_ANYWHERE" } }), b: llm({ apiKey: { file: "/no/such/key" } }) } };
    expect(problemsOf(raw)).toEqual([
      "backends.a.apiKey: the environment variable NOT_SET_ANYWHERE is not set",
      "backends.b.apiKey: cannot read /no/such/key: ENOENT",
    ]);
    const lazy = compileConfig(raw, { baseDir: "/", source: "(test)", checkSecrets: false });
    expect(() => (lazy.backends.a as LlmBackendConfig).apiKey!.reveal()).toThrow("backends.a.apiKey: the environment variable NOT_SET_ANYWHERE is not set");
  });
});

describe("gateway", () => {
  const backends = { web: { kind: "mcp-http", url: "http://127.0.0.1:1/mcp" } };

  it("has sane defaults: on in `up`, loopback, port 8765, no tokens, names prefixed with __", () => {
    const g = compile({ backends }).gateway;
    expect(g).toMatchObject({ enabled: true, host: "127.0.0.1", port: 8765, path: "/mcp", tokens: [], allowedOrigins: [], route: "auto" });
    expect(g.tools).toEqual({ prefix: "always", separator: "__", aliases: {} });
    expect(g.budget).toMatchObject({ defaultMs: 60_000, maxMs: 600_000 });
  });

  const problemsOf = (raw: Record<string, unknown>): readonly string[] => {
    try {
      compile(raw);
    } catch (err) {
      return (err as ConfigError).problems;
    }
    return [];
  };

  it("names every mistake: a token for a backend nobody configured, a default budget over the maximum, a bad separator", () => {
    expect(
      problemsOf({ backends, gateway: { tokens: [{ name: "a", token: { env: "X" }, backends: ["web", "nope"] }], budget: { default: "20m", max: "10m" } } }),
    ).toEqual(["gateway.budget.default: must be at most gateway.budget.max (10m)", 'gateway.tokens.0.backends.1: no backend "nope" is configured']);
    expect(problemsOf({ backends, gateway: { tools: { separator: "/" } } })).toEqual([expect.stringMatching(/^gateway\.tools\.separator: /)]);
    expect(problemsOf({ backends, gateway: { route: "sideways" } })).toEqual([expect.stringMatching(/^gateway\.route: .*"auto".*"router"/)]);
  });

  it("a token is read when the gateway starts, never printed", () => {
    const g = compileConfig(
      { backends, gateway: { tokens: [{ name: "a", token: { env: "GW" } }] } },
      { baseDir: "/", source: "(test)", env: { GW: "s3cret" } },
    ).gateway;
    expect(g.tokens[0]!.backends).toEqual(["*"]);
    expect(g.tokens[0]!.token.reveal()).toBe("s3cret");
    expect(inspect(g)).not.toContain("s3cret");
  });
});
