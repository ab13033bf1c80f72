import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { DEFAULT_MAX_BUDGET_MS } from "@toolbus/protocol";
import { parse as parseYaml } from "yaml";
import { formatDuration } from "./duration.js";
import { PROFILE_DEFAULTS, type HealthDefaults, type Profile, type ProfileDefaults } from "./profiles.js";
import { ConfigFileSchema } from "./schema.js";
import { Secret } from "./secret.js";

/** A configuration that cannot be used; `problems` lists every one as `path: message`. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly problems: readonly string[],
    readonly source: string,
  ) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof Error && err.name === "ConfigError";
}

/** The resilience policies of one backend, compiled from the profile and the backend's overrides. */
export interface PolicyConfig {
  /** false: calls go straight to the least-loaded endpoint with the budget as timeout, nothing else. */
  readonly enabled: boolean;
  readonly breaker: ProfileDefaults["breaker"];
  readonly retry: ProfileDefaults["retry"];
  /** undefined: no rate limit. */
  readonly rateLimit: { readonly ratePerSec: number; readonly burst: number } | undefined;
  readonly bulkhead: ProfileDefaults["bulkhead"];
  readonly adaptive: ProfileDefaults["adaptive"];
  /** Overrides of what a tool's annotations say about repeating it safely, and about caching it. */
  readonly tools: Readonly<Record<string, ToolOverride>>;
}

export interface ToolOverride {
  readonly idempotent?: boolean;
  readonly readOnly?: boolean;
  /** Cache its results (true) or never (false), whatever its annotations say. */
  readonly cache?: boolean;
  readonly cacheTtlMs?: number;
}

/** Caching of one backend's results. */
export interface BackendCacheConfig {
  readonly enabled: boolean;
  readonly ttlMs: number;
  /** Header names whose values are part of every key. */
  readonly vary: readonly string[];
}

/** The cache worker's settings, shared by the router (what to hand it) and the callers (what to store). */
export interface CacheConfig {
  readonly enabled: boolean;
  readonly ttlMs: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly maxValueBytes: number;
  readonly shared: { readonly enabled: boolean; readonly ttlMs: number; readonly maxBytes: number; readonly timeoutMs: number };
  readonly handoffTimeoutMs: number;
}

interface BackendCommon {
  readonly name: string;
  readonly connectTimeoutMs: number;
  readonly callTimeoutMs: number;
  readonly policy: PolicyConfig;
  readonly cache: BackendCacheConfig;
  /** Health probes of the endpoints: by the prober (HTTP), or by the caller that owns them (stdio children). */
  readonly health: HealthDefaults;
}
export interface McpStdioBackendConfig extends BackendCommon {
  readonly kind: "mcp-stdio";
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
  readonly pool: number;
  /** How tools/call is sent: toolbus's lean path, or the SDK's Client (config `mcp.calls`). */
  readonly calls: "lean" | "sdk";
}
export interface LaunchConfig {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
}
export interface McpHttpBackendConfig extends BackendCommon {
  readonly kind: "mcp-http";
  /** The first of `urls`. */
  readonly url: string;
  /** Every replica of the server: one endpoint each. */
  readonly urls: readonly string[];
  readonly headers: Readonly<Record<string, string>>;
  readonly connections: number;
  /** The MCP client transport: toolbus's lean one on undici, or the SDK's. */
  readonly transport: "lean" | "sdk";
  /** How tools/call is sent (`mcp.calls`); always `sdk` on the SDK's transport, which is the whole fallback. */
  readonly calls: "lean" | "sdk";
  readonly launch: LaunchConfig | undefined;
  /** Port rediscovery by the health prober; undefined: off. */
  readonly rediscover: { readonly portFrom: number; readonly portTo: number; readonly expectServer?: string; readonly maxAttempts: number } | undefined;
}
/** An LLM backend: OpenAI-compatible chat completions (`llm-openai`) or Anthropic messages (`llm-anthropic`). */
export interface LlmBackendConfig extends BackendCommon {
  readonly kind: "llm-openai" | "llm-anthropic";
  /** Base URLs up to and including `/v1`, one endpoint each. */
  readonly urls: readonly string[];
  /** undefined: no key is sent (a local server). */
  readonly apiKey: Secret | undefined;
  /** The first is the default model. */
  readonly models: readonly string[];
  readonly fallbacks: readonly string[];
  readonly headers: Readonly<Record<string, string>>;
  readonly connections: number;
  readonly launch: LaunchConfig | undefined;
  readonly llm: {
    /** `callTimeoutMs` is the simple requests' ceiling; this one the complex requests'. */
    readonly complexTimeoutMs: number;
    readonly firstTokenTimeoutMs: number;
    readonly idleTimeoutMs: number;
    readonly complexity: { readonly promptChars: number; readonly maxTokens: number };
    /** undefined: no limit on tokens per minute. */
    readonly tokensPerMinute: number | undefined;
  };
}
export type BackendConfig = McpStdioBackendConfig | McpHttpBackendConfig | LlmBackendConfig;

/** Whether `backend` is one of the LLM kinds (served on `.chat`, not `.call`). */
export function isLlmBackend(backend: BackendConfig): backend is LlmBackendConfig {
  return backend.kind === "llm-openai" || backend.kind === "llm-anthropic";
}

/** The seed's figures for LLM calls: 60 s for a simple request, 180 s for a complex one. */
export const LLM_DEFAULTS = { simpleTimeoutMs: 60_000, complexTimeoutMs: 180_000, firstTokenTimeoutMs: 60_000, idleTimeoutMs: 30_000 } as const;

/** The chat log: its stream, and how the writer writes it. */
export interface ChatLogConfig {
  /** Whether `toolbus up` runs a writer. */
  readonly enabled: boolean;
  /** Absolute. */
  readonly dir: string;
  readonly maxEventBytes: number;
  readonly stream: { readonly maxAgeMs: number; readonly maxBytes: number; readonly duplicateWindowMs: number };
  readonly batch: { readonly maxEvents: number; readonly maxWaitMs: number };
  readonly lockStaleMs: number;
}

/** The compiled, frozen configuration every worker receives. Durations are in ms. */
export interface ToolbusConfig {
  readonly source: string;
  readonly profile: Profile;
  readonly nats: {
    readonly servers: readonly string[];
    readonly user?: string;
    readonly pass?: string;
    readonly token?: string;
    readonly credsFile?: string;
    /** Replicas of the streams and KV buckets toolbus creates. */
    readonly replicas: number;
  };
  readonly limits: { readonly maxRequestBytes: number; readonly maxBudgetMs: number; readonly defaultBudgetMs: number };
  readonly admin: { readonly port: number; readonly host: string };
  readonly log: { readonly level: string };
  readonly heartbeatMs: number;
  readonly shutdownGraceMs: number;
  readonly cache: CacheConfig;
  readonly chatLog: ChatLogConfig;
  /** LLM routing: per model, the fallback chain that replaces its backend's. */
  readonly llm: { readonly fallbacks: Readonly<Record<string, readonly string[]>> };
  readonly gateway: GatewayConfig;
  readonly backends: Readonly<Record<string, BackendConfig>>;
}

/** The MCP front door's settings. */
export interface GatewayConfig {
  readonly enabled: boolean;
  readonly host: string;
  readonly port: number;
  readonly path: string;
  /** Empty: no auth (refused at start unless the host is a loopback address). */
  readonly tokens: readonly { readonly name: string; readonly token: Secret; readonly backends: readonly string[] }[];
  readonly allowedOrigins: readonly string[];
  readonly maxRequestBytes: number;
  readonly sessionTtlMs: number;
  /** `auto`: a call that is not cacheable goes straight to the backend's callers; `router`: every call through the router. */
  readonly route: "auto" | "router";
  readonly tools: { readonly prefix: "always" | "on-clash" | "never"; readonly separator: string; readonly aliases: Readonly<Record<string, string>> };
  readonly budget: {
    readonly defaultMs: number;
    readonly maxMs: number;
    readonly backends: Readonly<Record<string, { readonly defaultMs?: number; readonly maxMs?: number }>>;
  };
}

/** Values given on the command line; they win over everything else. */
export interface ConfigFlags {
  natsUrl?: string;
  /** Path of a NATS .creds file (`--creds`). */
  natsCreds?: string;
  profile?: string;
  adminPort?: number;
  logLevel?: string;
}

export interface LoadConfigOptions {
  /** Path of toolbus.yaml (YAML or JSON). Without it, only env, flags and defaults apply. */
  file?: string;
  /** The environment to read TOOLBUS_* from (library code never reads process.env itself). */
  env?: Readonly<Record<string, string | undefined>>;
  flags?: ConfigFlags;
  /** Read every LLM backend's API key now (default), so a missing one fails at start; false for commands that call nothing. */
  checkSecrets?: boolean;
}

type Json = Record<string, unknown>;

function section(raw: Json, key: string): Json {
  const value = raw[key];
  if (value === undefined || value === null) {
    const fresh: Json = {};
    raw[key] = fresh;
    return fresh;
  }
  // A wrong type stays as it is, so the schema reports it with its path.
  return typeof value === "object" && !Array.isArray(value) ? (value as Json) : {};
}

function numberOrText(text: string): number | string {
  return /^-?\d+$/.test(text.trim()) ? Number(text) : text;
}

/** Layer environment and flags over the file: flags > TOOLBUS_* env > file. */
function applyOverrides(raw: Json, env: Readonly<Record<string, string | undefined>>, flags: ConfigFlags): void {
  const set = (target: Json, key: string, value: unknown): void => {
    if (value !== undefined && value !== "") target[key] = value;
  };
  const natsUrl = flags.natsUrl ?? env.TOOLBUS_NATS_URL;
  if (natsUrl)
    section(raw, "nats").servers = natsUrl
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  set(section(raw, "nats"), "user", env.TOOLBUS_NATS_USER);
  set(section(raw, "nats"), "pass", env.TOOLBUS_NATS_PASS);
  set(section(raw, "nats"), "token", env.TOOLBUS_NATS_TOKEN);
  set(section(raw, "nats"), "credsFile", flags.natsCreds ?? env.TOOLBUS_NATS_CREDS);
  if (env.TOOLBUS_NATS_REPLICAS !== undefined) set(section(raw, "nats"), "replicas", numberOrText(env.TOOLBUS_NATS_REPLICAS));
  set(raw, "profile", flags.profile ?? env.TOOLBUS_PROFILE);
  const adminPort = flags.adminPort ?? (env.TOOLBUS_ADMIN_PORT !== undefined ? numberOrText(env.TOOLBUS_ADMIN_PORT) : undefined);
  set(section(raw, "admin"), "port", adminPort);
  set(section(raw, "admin"), "host", env.TOOLBUS_ADMIN_HOST);
  set(section(raw, "log"), "level", flags.logLevel ?? env.TOOLBUS_LOG_LEVEL);
  set(section(raw, "mcpHttp"), "transport", env.TOOLBUS_MCP_HTTP_TRANSPORT);
  set(section(raw, "mcp"), "calls", env.TOOLBUS_MCP_CALLS);
  if (env.TOOLBUS_MAX_REQUEST_BYTES !== undefined) set(section(raw, "limits"), "maxRequestBytes", numberOrText(env.TOOLBUS_MAX_REQUEST_BYTES));
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** One side of a `low <= high` pair of durations: its name, the value set in the file (if any), and the value in effect. */
interface Side {
  readonly name: string;
  readonly set: number | undefined;
  readonly ms: number;
}

/**
 * `low <= high` on the values in effect, so a field set in the file can conflict with a default; the
 * problem goes on a field that was set, and says where the other value came from.
 */
function orderProblem(prefix: string, low: Side, high: Side, defaultFrom: string): string | undefined {
  if (low.ms <= high.ms) return undefined;
  const origin = (side: Side): string => formatDuration(side.ms) + (side.set === undefined ? `, ${defaultFrom}` : "");
  return high.set !== undefined
    ? `${prefix}${high.name}: must be at least ${low.name} (${origin(low)})`
    : `${prefix}${low.name}: must be at most ${high.name} (${origin(high)})`;
}

/**
 * Validate and compile raw configuration (already merged with env and flags). Relative paths are
 * resolved against `baseDir`, the directory of the config file.
 */
export function compileConfig(
  raw: unknown,
  options: {
    baseDir: string;
    source: string;
    env?: Readonly<Record<string, string | undefined>>;
    /** Read every API key now and report a missing one (default); false: when first used (a client needs none). */
    checkSecrets?: boolean;
  },
): ToolbusConfig {
  const env = options.env ?? {};
  const parsed = ConfigFileSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.length ? issue.path.map(String).join(".") : "(root)"}: ${issue.message}`);
    throw new ConfigError(problems, options.source);
  }
  const file = parsed.data;
  const defaults = PROFILE_DEFAULTS[file.profile];
  const profileDefault = `the ${file.profile} profile's default`;
  const problems: string[] = [];
  const maxBudgetMs = file.limits.maxBudget ?? DEFAULT_MAX_BUDGET_MS;
  const defaultBudgetMs = file.limits.defaultBudget ?? defaults.defaultBudgetMs;
  // A default budget above the max would make every router refuse `toolbus call` without --timeout.
  const budget = orderProblem(
    "limits.",
    { name: "defaultBudget", set: file.limits.defaultBudget, ms: defaultBudgetMs },
    { name: "maxBudget", set: file.limits.maxBudget, ms: maxBudgetMs },
    file.limits.defaultBudget === undefined ? profileDefault : "the default",
  );
  if (budget) problems.push(budget);
  const at = (p: string | undefined): string => (p === undefined ? options.baseDir : isAbsolute(p) ? p : resolve(options.baseDir, p));
  // A command with a path in it is relative to the config file; a bare name is looked up on PATH.
  const command = (c: string): string => (c.includes("/") && !isAbsolute(c) ? resolve(options.baseDir, c) : c);

  const backends: Record<string, BackendConfig> = {};
  for (const [name, b] of Object.entries(file.backends)) {
    const initialBackoffMs = b.retry.initialBackoff ?? defaults.retry.initialBackoffMs;
    const maxBackoffMs = b.retry.maxBackoff ?? defaults.retry.maxBackoffMs;
    // A cap below the first backoff silently overrides it: one of the two is not what was meant.
    const backoff = orderProblem(
      `backends.${name}.retry.`,
      { name: "initialBackoff", set: b.retry.initialBackoff, ms: initialBackoffMs },
      { name: "maxBackoff", set: b.retry.maxBackoff, ms: maxBackoffMs },
      profileDefault,
    );
    if (backoff) problems.push(backoff);
    const policy: PolicyConfig = {
      enabled: b.policies,
      breaker: {
        volumeThreshold: b.breaker.volume ?? defaults.breaker.volumeThreshold,
        errorPercentage: b.breaker.errorPercentage ?? defaults.breaker.errorPercentage,
        windowMs: b.breaker.window ?? defaults.breaker.windowMs,
        recoveryMs: b.breaker.recovery ?? defaults.breaker.recoveryMs,
      },
      retry: {
        maxRetries: b.retry.maxRetries ?? defaults.retry.maxRetries,
        initialBackoffMs,
        maxBackoffMs,
        budgetRatio: b.retry.budgetRatio ?? defaults.retry.budgetRatio,
        budgetReserve: b.retry.budgetReserve ?? defaults.retry.budgetReserve,
      },
      rateLimit: b.rateLimit?.rate !== undefined ? { ratePerSec: b.rateLimit.rate, burst: b.rateLimit.burst } : undefined,
      bulkhead: {
        maxConcurrent: b.bulkhead.maxConcurrent ?? defaults.bulkhead.maxConcurrent,
        maxQueue: b.bulkhead.maxQueue ?? defaults.bulkhead.maxQueue,
      },
      adaptive: {
        minMs: b.timeouts.min ?? defaults.adaptive.minMs,
        multiplier: b.timeouts.multiplier ?? defaults.adaptive.multiplier,
        minSamples: b.timeouts.minSamples ?? defaults.adaptive.minSamples,
        window: defaults.adaptive.window,
      },
      tools: Object.fromEntries(
        Object.entries(b.tools).map(([tool, { cacheTtl, ...rest }]) => [tool, cacheTtl === undefined ? rest : { ...rest, cacheTtlMs: cacheTtl }]),
      ),
    };
    const llm = b.kind === "llm-openai" || b.kind === "llm-anthropic";
    const common = {
      name,
      connectTimeoutMs: b.timeouts.connect ?? defaults.connectTimeoutMs,
      callTimeoutMs: b.timeouts.call ?? (llm ? LLM_DEFAULTS.simpleTimeoutMs : defaults.callTimeoutMs),
      policy,
      cache: { enabled: b.cache.enabled, ttlMs: b.cache.ttl ?? file.cache.ttl, vary: b.cache.vary },
      health: {
        intervalMs: b.health.interval ?? defaults.health.intervalMs,
        timeoutMs: b.health.timeout ?? defaults.health.timeoutMs,
        unhealthyAfter: b.health.unhealthyAfter ?? defaults.health.unhealthyAfter,
        healthyAfter: b.health.healthyAfter ?? defaults.health.healthyAfter,
        degradedMs: b.health.degraded ?? defaults.health.degradedMs,
      },
    };
    if (b.kind === "llm-openai" || b.kind === "llm-anthropic") {
      const t = b.timeouts;
      const callTimeoutMs = common.callTimeoutMs;
      const complexTimeoutMs = t.complex ?? Math.max(LLM_DEFAULTS.complexTimeoutMs, callTimeoutMs);
      if (complexTimeoutMs < callTimeoutMs) problems.push(`backends.${name}.timeouts.complex: must be at least call (${formatDuration(callTimeoutMs)})`);
      for (const [i, fallback] of b.fallbacks.entries()) {
        const target = file.backends[fallback];
        if (fallback === name) problems.push(`backends.${name}.fallbacks.${i}: a backend cannot fall back to itself`);
        else if (!target) problems.push(`backends.${name}.fallbacks.${i}: no backend "${fallback}" is configured`);
        else if (target.kind !== "llm-openai" && target.kind !== "llm-anthropic")
          problems.push(`backends.${name}.fallbacks.${i}: "${fallback}" is not an LLM backend`);
      }
      const apiKey = b.apiKey && secretOf(b.apiKey, env, at, `backends.${name}.apiKey`, options.checkSecrets ?? true, problems);
      backends[name] = {
        ...common,
        kind: b.kind,
        urls: (b.urls ?? [b.url!]).map((u) => u.replace(/\/+$/, "")),
        apiKey,
        models: b.models,
        fallbacks: b.fallbacks,
        headers: b.headers,
        connections: b.connections,
        launch: b.launch && { command: command(b.launch.command), args: b.launch.args, env: b.launch.env, cwd: at(b.launch.cwd) },
        llm: {
          complexTimeoutMs,
          firstTokenTimeoutMs: Math.min(t.firstToken ?? LLM_DEFAULTS.firstTokenTimeoutMs, complexTimeoutMs),
          idleTimeoutMs: t.idle ?? LLM_DEFAULTS.idleTimeoutMs,
          complexity: b.complexity,
          tokensPerMinute: b.rateLimit?.tokensPerMinute,
        },
      };
      continue;
    }
    backends[name] =
      b.kind === "mcp-stdio"
        ? { ...common, kind: b.kind, command: command(b.command), args: b.args, env: b.env, cwd: at(b.cwd), pool: b.pool, calls: file.mcp.calls }
        : {
            ...common,
            kind: b.kind,
            url: (b.urls ?? [b.url!])[0]!,
            urls: b.urls ?? [b.url!],
            headers: b.headers,
            connections: b.connections,
            transport: b.transport ?? file.mcpHttp.transport,
            calls: (b.transport ?? file.mcpHttp.transport) === "sdk" ? "sdk" : file.mcp.calls,
            rediscover: b.rediscover && {
              portFrom: b.rediscover.portRange[0],
              portTo: b.rediscover.portRange[1],
              maxAttempts: b.rediscover.maxAttempts,
              ...(b.rediscover.expectServer !== undefined ? { expectServer: b.rediscover.expectServer } : {}),
            },
            launch: b.launch && { command: command(b.launch.command), args: b.launch.args, env: b.launch.env, cwd: at(b.launch.cwd) },
          };
  }
  for (const [model, chain] of Object.entries(file.llm.fallbacks)) {
    const path = `llm.fallbacks.${model}`;
    if (!Object.values(backends).some((b) => isLlmBackend(b) && b.models.includes(model)))
      problems.push(`${path}: no LLM backend lists model "${model}" in its models`);
    for (const [i, name] of chain.entries()) {
      const target = backends[name];
      if (!target) problems.push(`${path}.${i}: no backend "${name}" is configured`);
      else if (!isLlmBackend(target)) problems.push(`${path}.${i}: "${name}" is not an LLM backend`);
    }
  }
  const c = file.cache;
  // The router must give the cache time to try its shared tier (and answer) before it sends the call on
  // itself; too small a margin would make a merely busy cache's calls reach the backend twice.
  if (c.handoffTimeout < 2 * c.shared.timeout)
    problems.push(`cache.handoffTimeout: must be at least twice cache.shared.timeout (${formatDuration(2 * c.shared.timeout)})`);
  const g = file.gateway;
  if (g.budget.default > g.budget.max) problems.push(`gateway.budget.default: must be at most gateway.budget.max (${formatDuration(g.budget.max)})`);
  g.tokens.forEach((t, i) =>
    t.backends.forEach((b, j) => {
      if (b !== "*" && !backends[b]) problems.push(`gateway.tokens.${i}.backends.${j}: no backend "${b}" is configured`);
    }),
  );
  for (const b of Object.keys(g.budget.backends)) if (!backends[b]) problems.push(`gateway.budget.backends.${b}: no backend "${b}" is configured`);
  if (problems.length > 0) throw new ConfigError(problems, options.source);
  return deepFreeze({
    source: options.source,
    profile: file.profile,
    nats: file.nats,
    limits: {
      maxRequestBytes: file.limits.maxRequestBytes,
      maxBudgetMs,
      defaultBudgetMs,
    },
    admin: file.admin,
    log: file.log,
    heartbeatMs: file.heartbeat ?? defaults.heartbeatMs,
    shutdownGraceMs: file.shutdownGrace ?? 10_000,
    cache: {
      enabled: c.enabled,
      ttlMs: c.ttl,
      maxEntries: c.maxEntries,
      maxBytes: c.maxBytes,
      maxValueBytes: c.maxValueBytes,
      shared: { enabled: c.shared.enabled, ttlMs: c.shared.ttl, maxBytes: c.shared.maxBytes, timeoutMs: c.shared.timeout },
      handoffTimeoutMs: c.handoffTimeout,
    },
    chatLog: {
      enabled: file.chatLog.enabled,
      dir: at(file.chatLog.dir),
      maxEventBytes: file.chatLog.maxEventBytes,
      stream: {
        maxAgeMs: file.chatLog.stream.maxAge,
        maxBytes: file.chatLog.stream.maxBytes,
        duplicateWindowMs: file.chatLog.stream.duplicateWindow,
      },
      batch: { maxEvents: file.chatLog.batch.maxEvents, maxWaitMs: file.chatLog.batch.maxWait },
      lockStaleMs: file.chatLog.lockStale,
    },
    llm: { fallbacks: file.llm.fallbacks },
    gateway: {
      enabled: file.gateway.enabled,
      host: file.gateway.host,
      port: file.gateway.port,
      path: file.gateway.path,
      // Read when the gateway starts (only it needs them), like an LLM backend's key.
      tokens: file.gateway.tokens.map((t, i) => ({
        name: t.name,
        token: secretOf(t.token, env, at, `gateway.tokens.${i}.token`, false, problems),
        backends: t.backends,
      })),
      allowedOrigins: file.gateway.allowedOrigins.map((o) => new URL(o).origin),
      maxRequestBytes: file.gateway.maxRequestBytes,
      sessionTtlMs: file.gateway.sessionTtl,
      route: file.gateway.route,
      tools: file.gateway.tools,
      budget: {
        defaultMs: file.gateway.budget.default,
        maxMs: file.gateway.budget.max,
        backends: Object.fromEntries(
          Object.entries(file.gateway.budget.backends).map(([b, v]) => [
            b,
            { ...(v.default !== undefined ? { defaultMs: v.default } : {}), ...(v.max !== undefined ? { maxMs: v.max } : {}) },
          ]),
        ),
      },
    },
    backends,
  });
}

/**
 * An API key from its variable or file, read when first used. With `check`, it is read now and a
 * missing one is a config problem (named, never shown).
 */
function secretOf(
  ref: { env: string } | { file: string },
  env: Readonly<Record<string, string | undefined>>,
  at: (p: string) => string,
  path: string,
  check: boolean,
  problems: string[],
): Secret {
  const file = "file" in ref ? at(ref.file) : undefined;
  const secret = new Secret("env" in ref ? `env ${ref.env}` : `file ${file}`, () => {
    let value: string;
    if ("env" in ref) {
      value = env[ref.env]?.trim() ?? "";
      if (!value) throw new Error(`${path}: the environment variable ${ref.env} is not set`);
      return value;
    }
    try {
      value = readFileSync(file!, "utf8").trim();
    } catch (err) {
      throw new Error(`${path}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!value) throw new Error(`${path}: ${file} is empty`);
    return value;
  });
  if (check) {
    try {
      secret.reveal();
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  return secret;
}

/** Parse the text of a config file (YAML is a superset of JSON, so both work). */
function parseFileText(text: string, source: string): Json {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true });
  } catch (err) {
    throw new ConfigError([`(file): not valid YAML or JSON: ${(err as Error).message.split("\n")[0]}`], source);
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(["(root): expected a mapping of settings"], source);
  return raw as Json;
}

/**
 * Load the configuration: file (if any), then TOOLBUS_* environment, then flags, then profile
 * defaults for whatever is still unset. Throws ConfigError listing every problem by path.
 */
export function loadConfig(options: LoadConfigOptions = {}): ToolbusConfig {
  const env = options.env ?? {};
  const source = options.file ? resolve(options.file) : "(no config file)";
  let raw: Json = {};
  if (options.file) {
    let text: string;
    try {
      text = readFileSync(source, "utf8");
    } catch (err) {
      throw new ConfigError([`(file): cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`], source);
    }
    raw = parseFileText(text, source);
  }
  applyOverrides(raw, env, options.flags ?? {});
  return compileConfig(raw, { baseDir: options.file ? dirname(source) : process.cwd(), source, env, checkSecrets: options.checkSecrets ?? true });
}
