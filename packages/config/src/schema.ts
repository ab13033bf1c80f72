import { BackendNameSchema } from "@toolbus/protocol";
import { z } from "zod";
import { DurationSchema } from "./duration.js";

const TimeoutsSchema = z
  .object({
    connect: DurationSchema.optional(),
    /** The longest one call may take (and the timeout until the adaptive one has enough samples). */
    call: DurationSchema.optional(),
    /** The adaptive timeout never goes below this. */
    min: DurationSchema.optional(),
    multiplier: z.number().min(1).max(100).optional(),
    minSamples: z.number().int().min(1).max(10_000).optional(),
  })
  .strict();

/** Resilience policies; each field overrides the profile's default for this backend. */
const PolicySchema = {
  /** false: no breaker, bulkhead, rate limit, retry or adaptive timeout (for measuring their cost). */
  policies: z.boolean().default(true),
  breaker: z
    .object({
      volume: z.number().int().min(1).optional(),
      errorPercentage: z.number().min(1).max(100).optional(),
      window: DurationSchema.optional(),
      recovery: DurationSchema.optional(),
    })
    .strict()
    .default({}),
  retry: z
    .object({
      maxRetries: z.number().int().min(0).max(10).optional(),
      initialBackoff: DurationSchema.optional(),
      maxBackoff: DurationSchema.optional(),
      budgetRatio: z.number().min(0).max(1).optional(),
      budgetReserve: z.number().int().min(0).optional(),
    })
    .strict()
    .default({}),
  /** Off unless set: calls per second to this backend, across its endpoints. */
  rateLimit: z
    .object({ rate: z.number().positive(), burst: z.number().int().min(1).default(1) })
    .strict()
    .optional(),
  bulkhead: z
    .object({ maxConcurrent: z.number().int().min(1).optional(), maxQueue: z.number().int().min(0).optional() })
    .strict()
    .default({}),
  /** Per tool: override what its annotations say about repeating it safely. */
  tools: z.record(z.string(), z.object({ idempotent: z.boolean().optional(), readOnly: z.boolean().optional() }).strict()).default({}),
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

const McpStdioBackendSchema = z
  .object({
    kind: z.literal("mcp-stdio"),
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: EnvMapSchema.default({}),
    cwd: z.string().optional(),
    /** Child processes kept running; calls go to the least busy live one. */
    pool: z.number().int().min(1).max(64).default(1),
    timeouts: TimeoutsSchema.default({}),
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
    /** Keep-alive connections held open to the server. */
    connections: z.number().int().min(1).max(1024).default(16),
    launch: LaunchSchema.optional(),
    timeouts: TimeoutsSchema.default({}),
    ...PolicySchema,
  })
  .strict()
  .refine((b) => (b.url === undefined) !== (b.urls === undefined), { message: "set exactly one of url or urls", path: ["url"] });

export const BackendFileSchema = z.discriminatedUnion("kind", [McpStdioBackendSchema, McpHttpBackendSchema], {
  error: (issue) => (issue.code === "invalid_union" ? 'unknown kind: expected "mcp-stdio" or "mcp-http"' : undefined),
});

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
      })
      .strict()
      .default({ servers: ["nats://127.0.0.1:4222"] }),
    limits: z
      .object({
        maxRequestBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(512 * 1024),
        maxBudget: DurationSchema.optional(),
        defaultBudget: DurationSchema.optional(),
      })
      .strict()
      .default({ maxRequestBytes: 512 * 1024 }),
    admin: z
      .object({
        /** 0 picks a free port; -1 turns the admin server off. */
        port: z.number().int().min(-1).max(65535).default(9464),
        host: z.string().default("127.0.0.1"),
      })
      .strict()
      .default({ port: 9464, host: "127.0.0.1" }),
    log: z
      .object({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info") })
      .strict()
      .default({ level: "info" }),
    heartbeat: DurationSchema.optional(),
    shutdownGrace: DurationSchema.optional(),
    backends: z.record(BackendNameSchema, BackendFileSchema).default({}),
  })
  .strict();
export type ConfigFile = z.input<typeof ConfigFileSchema>;
