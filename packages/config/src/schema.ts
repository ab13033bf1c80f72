import { BackendNameSchema } from "@toolbus/protocol";
import { z } from "zod";
import { duration, formatDuration } from "./duration.js";
import { ADAPTIVE_WINDOW } from "./profiles.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
// The ceiling of most durations. Past ~24.8 days Node's timers overflow and fire after 1 ms (the very
// busy loop the floors prevent); well before that, a day-long wait is a typo for something shorter.
const DAY = 24 * HOUR;

/** A number field within inclusive bounds; the message names the bound it crossed ("must be at least 1"). */
function bounded(bounds: { min: number; max?: number; whole?: boolean; unit?: string }) {
  const unit = bounds.unit ? ` ${bounds.unit}` : "";
  let schema = z.number();
  if (bounds.whole !== false) schema = schema.int({ error: "must be a whole number" });
  schema = schema.min(bounds.min, { error: `must be at least ${bounds.min}${unit}` });
  return bounds.max === undefined ? schema : schema.max(bounds.max, { error: `must be at most ${bounds.max}${unit}` });
}

/** The timeouts every backend has (the LLM kinds add their own). */
const timeoutFields = {
  // Spawning a process or opening a session and an MCP initialize never finish in under 100 ms; a
  // backend that needs 10 minutes to come up is broken, and start-up would wait for it.
  connect: duration({ min: 100, max: 10 * MINUTE }).optional(),
  /**
   * The longest one call may take (and the timeout until the adaptive one has enough samples).
   * At least 10 ms: 0 timed every call out, and even a local stdio tool takes a few ms through NATS and back.
   */
  call: duration({ min: 10, max: DAY }).optional(),
  /** The adaptive timeout never goes below this. */
  min: duration({ min: 1, max: DAY }).optional(),
  multiplier: bounded({ min: 1, max: 100, whole: false }).optional(),
  // The estimator keeps ADAPTIVE_WINDOW samples per tool; asking for more would never turn it on.
  minSamples: bounded({ min: 1, max: ADAPTIVE_WINDOW }).optional(),
};

/** `min` is checked against `call` only when both are set here: a profile's `min` above a shorter `call` is clamped to `call`, as documented. */
function minWithinCall(t: { min?: number | undefined; call?: number | undefined }, ctx: z.RefinementCtx): void {
  if (t.min !== undefined && t.call !== undefined && t.min > t.call)
    ctx.addIssue({ code: "custom", path: ["min"], message: `must be at most call (${formatDuration(t.call)})` });
}

const TimeoutsSchema = z.object(timeoutFields).strict().superRefine(minWithinCall);

/** Resilience policies; each field overrides the profile's default for this backend. */
const PolicySchema = {
  /** false: no breaker, bulkhead, rate limit, retry or adaptive timeout (for measuring their cost). */
  policies: z.boolean().default(true),
  breaker: z
    .object({
      volume: bounded({ min: 1 }).optional(),
      errorPercentage: bounded({ min: 1, max: 100, whole: false }).optional(),
      // opossum rotates window/10 buckets on a timer: under 100 ms it fires more often than every 10 ms
      // (every 1 ms below 10 ms), and 0 silently becomes opossum's own 10 s default.
      window: duration({ min: 100, max: DAY }).optional(),
      // 0 would let a probe through at once, so an open breaker would never shed load.
      recovery: duration({ min: 10, max: DAY }).optional(),
    })
    .strict()
    .default({}),
  retry: z
    .object({
      maxRetries: bounded({ min: 0, max: 10 }).optional(),
      // 0 is allowed (retry at once). A backoff never waits past the call's deadline, so one over ten
      // minutes is a typo for something shorter. maxBackoff >= initialBackoff is checked in compile.
      initialBackoff: duration({ min: 0, max: 10 * MINUTE }).optional(),
      maxBackoff: duration({ min: 0, max: 10 * MINUTE }).optional(),
      budgetRatio: bounded({ min: 0, max: 1, whole: false }).optional(),
      budgetReserve: bounded({ min: 0 }).optional(),
    })
    .strict()
    .default({}),
  /** Off unless set: calls per second to this backend, across its endpoints. */
  rateLimit: z
    .object({
      // Fractions are fine (0.2 = one call every 5 s); 0 would refuse every call.
      rate: z.number().gt(0, { error: "must be more than 0 (calls per second; leave rateLimit out for no limit)" }),
      burst: bounded({ min: 1 }).default(1),
    })
    .strict()
    .optional(),
  bulkhead: z
    .object({ maxConcurrent: bounded({ min: 1 }).optional(), maxQueue: bounded({ min: 0 }).optional() })
    .strict()
    .default({}),
  /**
   * Per tool: override what its annotations say about repeating it safely, and whether its results
   * are cached (by default: when it is read-only) and for how long.
   */
  tools: z
    .record(
      z.string(),
      z
        .object({
          idempotent: z.boolean().optional(),
          readOnly: z.boolean().optional(),
          cache: z.boolean().optional(),
          cacheTtl: duration({ min: 1, max: DAY }).optional(),
        })
        .strict(),
    )
    .default({}),
  /** Caching of this backend's results; see the top-level `cache` for the shared settings. */
  cache: z
    .object({
      /** false: nothing of this backend is cached. */
      enabled: z.boolean().default(true),
      ttl: duration({ min: 1, max: DAY }).optional(),
      /**
       * Request headers the results depend on (e.g. one naming the user): their values are part of the
       * key, so one user's result is never served to another. A call without one of them is not cached.
       */
      vary: z.array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "must be an HTTP header name")).default([]),
    })
    .strict()
    .default({ enabled: true, vary: [] }),
};

const EnvMapSchema = z.record(z.string(), z.string());

/** A process toolbus starts before connecting to an HTTP backend (handy on a laptop). */
const LaunchSchema = z
  .object({
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: EnvMapSchema.default({}),
    cwd: z.string().optional(),
  })
  .strict();

/** Health probes of this backend's endpoints; each field overrides the profile's default. */
const HealthSchema = z
  .object({
    // Under 100 ms a prober would load a backend more than its callers; over an hour it says nothing.
    interval: duration({ min: 100, max: HOUR }).optional(),
    timeout: duration({ min: 10, max: 10 * MINUTE }).optional(),
    unhealthyAfter: bounded({ min: 1, max: 100 }).optional(),
    healthyAfter: bounded({ min: 1, max: 100 }).optional(),
    degraded: duration({ min: 1, max: 10 * MINUTE }).optional(),
  })
  .strict();

/** Where to look for an HTTP backend's server when it stops answering (it may come back on another port). */
const RediscoverSchema = z
  .object({
    portRange: z
      .tuple([bounded({ min: 1, max: 65535 }), bounded({ min: 1, max: 65535 })])
      .refine(([from, to]) => from <= to && to - from <= 10_000, { message: "must be [from, to] with from ≤ to, at most 10,000 ports" }),
    /** The MCP server name (serverInfo.name) to accept; learned from the first successful initialize when unset. */
    expectServer: z.string().min(1).optional(),
    /** Scans before the endpoint is reported lost (it is still scanned then, at the longest backoff). */
    maxAttempts: bounded({ min: 1, max: 500 }).default(100),
  })
  .strict();

const McpStdioBackendSchema = z
  .object({
    kind: z.literal("mcp-stdio"),
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: EnvMapSchema.default({}),
    cwd: z.string().optional(),
    /** Child processes kept running; calls go to the least busy live one. */
    pool: bounded({ min: 1, max: 64 }).default(1),
    timeouts: TimeoutsSchema.default({}),
    health: HealthSchema.default({}),
    ...PolicySchema,
  })
  .strict();

const HttpUrlSchema = z.url({ protocol: /^https?$/, error: "Invalid URL (expected http:// or https://)" });

const McpHttpBackendSchema = z
  .object({
    kind: z.literal("mcp-http"),
    /** One server, or `urls` for several replicas of it (calls go to the least loaded, failing over). */
    url: HttpUrlSchema.optional(),
    urls: z.array(HttpUrlSchema).min(1).optional(),
    headers: z.record(z.string(), z.string()).default({}),
    /** Keep-alive connections held open to the server; the server's event stream holds one for good. */
    connections: bounded({ min: 2, max: 1024 }).default(16),
    /** The MCP client transport: toolbus's lean one on undici, or the SDK's (a fallback); default: `mcpHttp.transport`. */
    transport: z.enum(["lean", "sdk"]).optional(),
    launch: LaunchSchema.optional(),
    timeouts: TimeoutsSchema.default({}),
    health: HealthSchema.default({}),
    rediscover: RediscoverSchema.optional(),
    ...PolicySchema,
  })
  .strict()
  .refine((b) => (b.url === undefined) !== (b.urls === undefined), { message: "set exactly one of url or urls", path: ["url"] });

/**
 * An API key: the name of an environment variable, or a file (a Kubernetes Secret mounted as one).
 * Never the key itself, so a config file can be shared and committed.
 */
const ApiKeySchema = z.union(
  [
    z.object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name") }).strict(),
    z.object({ file: z.string().min(1) }).strict(),
  ],
  {
    error: () => 'expected { env: "VARIABLE" } or { file: "path" } (never the key itself)',
  },
);

/** The LLM kinds' timeouts: the seed's split by complexity, and the two that only streams have. */
const LlmTimeoutsSchema = z
  .object({
    ...timeoutFields,
    /** The longest a complex request may take (long prompt, large maxTokens, intent analysis); `call` is the simple one's. */
    complex: duration({ min: 10, max: DAY }).optional(),
    /** No first chunk within this → the attempt fails (and may be retried or fall back: nothing reached the client). */
    firstToken: duration({ min: 10, max: DAY }).optional(),
    /** A stream with no chunk for this long is cut with a typed error. */
    idle: duration({ min: 10, max: DAY }).optional(),
  })
  .strict()
  .superRefine(minWithinCall);

/** OpenAI-compatible chat completions (OpenAI, LM Studio, vLLM, Ollama) or Anthropic messages. */
function llmBackendSchema<K extends "llm-openai" | "llm-anthropic">(kind: K) {
  return z
    .object({
      kind: z.literal(kind),
      /** The API's base URL, up to and including `/v1` (`http://127.0.0.1:1234/v1`); `urls` for several replicas. */
      url: HttpUrlSchema.optional(),
      urls: z.array(HttpUrlSchema).min(1).optional(),
      apiKey: ApiKeySchema.optional(),
      /** The models it serves; the first is used when a request names none (or falls back here from another model). */
      models: z.array(z.string().min(1).max(256)).min(1),
      /** Backends to try, in order, when this one cannot answer before the first chunk. */
      fallbacks: z.array(BackendNameSchema).default([]),
      /** More HTTP headers on every request (not for the API key: use apiKey). */
      headers: z.record(z.string(), z.string()).default({}),
      /** Keep-alive connections per endpoint (the seed's pool: 10). */
      connections: bounded({ min: 1, max: 1024 }).default(10),
      /** A server process toolbus starts and stops with the caller (a local model server, say). */
      launch: LaunchSchema.optional(),
      timeouts: LlmTimeoutsSchema.default({}),
      health: HealthSchema.default({}),
      /** What makes a request complex (a longer timeout): a prompt of more characters, or a larger maxTokens. */
      complexity: z
        .object({ promptChars: bounded({ min: 1 }).default(8_000), maxTokens: bounded({ min: 1 }).default(2_000) })
        .strict()
        .default({ promptChars: 8_000, maxTokens: 2_000 }),
      ...PolicySchema,
      /** Requests per second (`rate`, `burst`) and tokens per minute, per backend; each is off unless set. */
      rateLimit: z
        .object({
          rate: z.number().gt(0, { error: "must be more than 0 (requests per second; leave it out for no limit)" }).optional(),
          burst: bounded({ min: 1 }).default(1),
          tokensPerMinute: bounded({ min: 1 }).optional(),
        })
        .strict()
        .optional(),
    })
    .strict()
    .refine((b) => (b.url === undefined) !== (b.urls === undefined), { message: "set exactly one of url or urls", path: ["url"] });
}

export const BackendFileSchema = z.discriminatedUnion(
  "kind",
  [McpStdioBackendSchema, McpHttpBackendSchema, llmBackendSchema("llm-openai"), llmBackendSchema("llm-anthropic")],
  {
    error: (issue) => (issue.code === "invalid_union" ? 'unknown kind: expected "mcp-stdio", "mcp-http", "llm-openai" or "llm-anthropic"' : undefined),
  },
);

/** The shape of toolbus.yaml once merged with environment and flags; profile defaults fill the rest later. */
export const ConfigFileSchema = z
  .object({
    profile: z.enum(["local", "cloud", "hybrid"]).default("local"),
    nats: z
      .object({
        servers: z
          .array(z.string().regex(/^(nats|tls|ws|wss):\/\/[^\s]+$|^[^\s:/]+:\d+$/, "expected nats://host:port"))
          .min(1)
          .default(["nats://127.0.0.1:4222"]),
        user: z.string().optional(),
        pass: z.string().optional(),
        token: z.string().optional(),
        credsFile: z.string().optional(),
        /** Replicas of every stream and KV bucket toolbus creates: 3 on a three-node JetStream cluster (set when they are created). */
        replicas: bounded({ min: 1, max: 5 }).default(1),
      })
      .strict()
      .default({ servers: ["nats://127.0.0.1:4222"], replicas: 1 }),
    limits: z
      .object({
        maxRequestBytes: bounded({ min: 1024, max: 64 * 1024 * 1024, unit: "bytes" }).default(512 * 1024),
        // The same floor as timeouts.call: a smaller budget times out before any tool answers.
        // defaultBudget <= maxBudget is checked in compile, against the profile's default too.
        maxBudget: duration({ min: 10, max: DAY }).optional(),
        defaultBudget: duration({ min: 10, max: DAY }).optional(),
      })
      .strict()
      .default({ maxRequestBytes: 512 * 1024 }),
    admin: z
      .object({
        /** 0 picks a free port; -1 turns the admin server off. */
        port: bounded({ min: -1, max: 65535 }).default(9464),
        host: z.string().default("127.0.0.1"),
      })
      .strict()
      .default({ port: 9464, host: "127.0.0.1" }),
    log: z
      .object({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info") })
      .strict()
      .default({ level: "info" }),
    // 0 was a busy loop; under 100 ms every caller floods the bus with heartbeats. Routers drop a
    // caller after three silent intervals, so more than an hour would keep a dead one listed for hours.
    heartbeat: duration({ min: 100, max: HOUR }).optional(),
    // 0 stops at once without waiting for calls in flight; no orchestrator waits an hour for a pod.
    shutdownGrace: duration({ min: 0, max: HOUR }).optional(),
    cache: z
      .object({
        /** false: the router sends no call to a cache worker (and `toolbus up` starts none). */
        enabled: z.boolean().default(true),
        /** How long an entry lives, unless its backend or tool says otherwise. */
        ttl: duration({ min: 1, max: DAY }).default(5 * MINUTE),
        /** The in-memory tier of each cache replica: at most this many entries and bytes. */
        maxEntries: bounded({ min: 1, max: 10_000_000 }).default(10_000),
        maxBytes: bounded({ min: 1024, max: 64 * 1024 * 1024 * 1024, unit: "bytes" }).default(64 * 1024 * 1024),
        /** A result larger than this is not cached (the call still succeeds). */
        maxValueBytes: bounded({ min: 1, max: 64 * 1024 * 1024, unit: "bytes" }).default(256 * 1024),
        /** The tier every cache replica shares: KV bucket toolbus_cache. */
        shared: z
          .object({
            enabled: z.boolean().default(true),
            /** The bucket's TTL: the longest any entry lives there (fixed when the bucket is created). */
            ttl: duration({ min: 1000, max: 30 * DAY }).default(HOUR),
            maxBytes: bounded({ min: 1024 * 1024, unit: "bytes" }).default(256 * 1024 * 1024),
            /** A lookup in the shared tier slower than this is a miss (the call goes on to the backend). */
            timeout: duration({ min: 1, max: 10_000 }).default(50),
          })
          .strict()
          .default({ enabled: true, ttl: HOUR, maxBytes: 256 * 1024 * 1024, timeout: 50 }),
        /**
         * A call handed to the cache that it has neither answered nor sent on within this time (it died
         * or stalls) is sent to the backend by the router. At least twice the shared tier's timeout.
         */
        handoffTimeout: duration({ min: 10, max: 60_000 }).default(250),
      })
      .strict()
      .default({
        enabled: true,
        ttl: 5 * MINUTE,
        maxEntries: 10_000,
        maxBytes: 64 * 1024 * 1024,
        maxValueBytes: 256 * 1024,
        shared: { enabled: true, ttl: HOUR, maxBytes: 256 * 1024 * 1024, timeout: 50 },
        handoffTimeout: 250,
      }),
    chatLog: z
      .object({
        /** false: `toolbus up` starts no chat-log writer (callers still publish events of calls that name a conversation). */
        enabled: z.boolean().default(true),
        /** Where the writer keeps one `<conversation>.jsonl` per conversation (relative to this file). */
        dir: z.string().min(1).default("chat-logs"),
        /** A larger event is never written: it goes to the dead-letter subject. */
        maxEventBytes: bounded({ min: 256, max: 16 * 1024 * 1024, unit: "bytes" }).default(256 * 1024),
        stream: z
          .object({
            /** How long the stream keeps events (they are in the files once written). */
            maxAge: duration({ min: 60_000, max: 10 * 365 * DAY }).default(7 * DAY),
            maxBytes: bounded({ min: 1024 * 1024, unit: "bytes" }).default(1024 * 1024 * 1024),
            /** A re-sent event (same id) within this window is stored once. */
            duplicateWindow: duration({ min: 1_000, max: DAY }).default(2 * MINUTE),
          })
          .strict()
          .default({ maxAge: 7 * DAY, maxBytes: 1024 * 1024 * 1024, duplicateWindow: 2 * MINUTE }),
        /** Events fetched, written and fsynced together; a batch waits at most maxWait to fill. */
        batch: z
          .object({ maxEvents: bounded({ min: 1, max: 10_000 }).default(1_000), maxWait: duration({ min: 1, max: 10_000 }).default(2) })
          .strict()
          .default({ maxEvents: 1_000, maxWait: 2 }),
        /** A file lock not refreshed for this long is taken for a dead writer's (at least 2s: proper-lockfile's floor). */
        lockStale: duration({ min: 2_000, max: 10 * MINUTE }).default(5_000),
      })
      .strict()
      .default({
        enabled: true,
        dir: "chat-logs",
        maxEventBytes: 256 * 1024,
        stream: { maxAge: 7 * DAY, maxBytes: 1024 * 1024 * 1024, duplicateWindow: 2 * MINUTE },
        batch: { maxEvents: 1_000, maxWait: 2 },
        lockStale: 5_000,
      }),
    /** The MCP front door: one MCP server (streamable HTTP; `toolbus gateway --stdio`) serving every backend's tools. */
    gateway: z
      .object({
        /** Part of `toolbus up`. */
        enabled: z.boolean().default(true),
        host: z.string().default("127.0.0.1"),
        /** 0 picks a free port. */
        port: bounded({ min: 0, max: 65535 }).default(8765),
        path: z
          .string()
          .regex(/^\/[A-Za-z0-9/_.-]*$/, "must be a URL path such as /mcp")
          .default("/mcp"),
        /** Bearer tokens, each naming the backends it may reach; none: no auth, allowed only on a loopback host. */
        tokens: z
          .array(z.object({ name: z.string().min(1).max(64), token: ApiKeySchema, backends: z.array(z.string()).min(1).default(["*"]) }).strict())
          .default([]),
        /** Browser origins allowed to call (CORS, and the DNS-rebinding check): none by default. */
        allowedOrigins: z.array(z.string().url()).default([]),
        maxRequestBytes: bounded({ min: 1024, max: 64 * 1024 * 1024, unit: "bytes" }).default(1024 * 1024),
        /**
         * How a tools/call travels. `auto`: a call the router would only pass on (not cacheable) goes
         * straight to the backend's callers, one hop fewer; a cacheable one goes through the router to the
         * cache. `router`: every call through the router.
         */
        route: z.enum(["auto", "router"]).default("auto"),
        /** A session unused for this long is forgotten (by every replica). */
        sessionTtl: duration({ min: 1000, max: 30 * DAY }).default(HOUR),
        tools: z
          .object({
            /** `always`: every tool is `<backend><separator><tool>`; `on-clash`: only names two backends share; `never`. */
            prefix: z.enum(["always", "on-clash", "never"]).default("always"),
            separator: z
              .string()
              .regex(/^[A-Za-z0-9_.-]{1,8}$/, "1-8 of A-Z, a-z, 0-9, '_', '.', '-'")
              .default("__"),
            /** The prefix to use for a backend instead of its name. */
            aliases: z.record(z.string(), z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/)).default({}),
          })
          .strict()
          .default({ prefix: "always", separator: "__", aliases: {} }),
        /** Each call's budget: `default` unless the client asks for one (`_meta` "io.toolbus/timeoutMs"), never past `max`; per backend too. */
        budget: z
          .object({
            default: duration({ min: 1, max: DAY }).default(60 * 1000),
            max: duration({ min: 1, max: DAY }).default(10 * MINUTE),
            backends: z
              .record(z.string(), z.object({ default: duration({ min: 1, max: DAY }).optional(), max: duration({ min: 1, max: DAY }).optional() }).strict())
              .default({}),
          })
          .strict()
          .default({ default: 60 * 1000, max: 10 * MINUTE, backends: {} }),
      })
      .strict()
      .default({
        enabled: true,
        host: "127.0.0.1",
        port: 8765,
        path: "/mcp",
        tokens: [],
        allowedOrigins: [],
        maxRequestBytes: 1024 * 1024,
        route: "auto",
        sessionTtl: HOUR,
        tools: { prefix: "always", separator: "__", aliases: {} },
        budget: { default: 60 * 1000, max: 10 * MINUTE, backends: {} },
      }),
    /** Every MCP backend (stdio and HTTP). */
    mcp: z
      .object({
        /**
         * `lean`: tools/call goes straight onto the connection (a fraction of the SDK's CPU per call; the
         * SDK's Client keeps everything else); `sdk`: through the SDK's Client, a fallback for a server the
         * lean path gets wrong (env TOOLBUS_MCP_CALLS). A backend on `transport: sdk` uses the SDK for calls too.
         */
        calls: z.enum(["lean", "sdk"]).default("lean"),
      })
      .strict()
      .default({ calls: "lean" }),
    /** Defaults for every `mcp-http` backend. */
    mcpHttp: z
      .object({
        /** `lean`: toolbus's streamable-HTTP client on undici (a fraction of the CPU); `sdk`: the MCP SDK's (env TOOLBUS_MCP_HTTP_TRANSPORT). */
        transport: z.enum(["lean", "sdk"]).default("lean"),
      })
      .strict()
      .default({ transport: "lean" }),
    /** LLM routing across backends. */
    llm: z
      .object({
        /** Per model: the backends to try, in order, when the one serving it cannot answer (instead of that backend's own fallbacks). */
        fallbacks: z.record(z.string().min(1).max(256), z.array(BackendNameSchema).min(1)).default({}),
      })
      .strict()
      .default({ fallbacks: {} }),
    backends: z.record(BackendNameSchema, BackendFileSchema).default({}),
  })
  .strict();
export type ConfigFile = z.input<typeof ConfigFileSchema>;
