import { BackendNameSchema } from "@toolbus/protocol";
import { z } from "zod";
import { DurationSchema } from "./duration.js";

const TimeoutsSchema = z
  .object({
    connect: DurationSchema.optional(),
    call: DurationSchema.optional(),
  })
  .strict();

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
  })
  .strict();

const McpHttpBackendSchema = z
  .object({
    kind: z.literal("mcp-http"),
    url: z.url({ protocol: /^https?$/, error: "Invalid URL (expected http:// or https://)" }),
    headers: z.record(z.string(), z.string()).default({}),
    /** Keep-alive connections held open to the server. */
    connections: z.number().int().min(1).max(1024).default(16),
    launch: LaunchSchema.optional(),
    timeouts: TimeoutsSchema.default({}),
  })
  .strict();

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
