import { z } from "zod";
import { ErrorCode } from "./errors.js";
import { CONVERSATION_ID_PATTERN, ConversationIdSchema } from "./chat.js";
import { BACKEND_NAME_PATTERN } from "./subjects.js";

/** A backend name, usable as a subject token. */
export const BackendNameSchema = z.string().regex(BACKEND_NAME_PATTERN, "backend names are 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit");

/** Body of `toolbus.v1.tool.call` and `toolbus.v1.backend.<b>.call`. */
export const ToolCallRequestSchema = z.object({
  backend: BackendNameSchema,
  tool: z.string().min(1).max(256),
  arguments: z.record(z.string(), z.unknown()).default({}),
  /** Calls that name a conversation are logged in it (tool_call, tool_result or error events). */
  conversationId: ConversationIdSchema.optional(),
  cache: z.enum(["default", "bypass"]).optional(),
});
export type ToolCallRequest = z.infer<typeof ToolCallRequestSchema>;
/** What a client sends (arguments may be omitted). */
export type ToolCallRequestInput = z.input<typeof ToolCallRequestSchema>;

/**
 * The common, valid tool call checked by hand: the same result as `ToolCallRequestSchema.parse`, at a
 * fraction of zod's cost (every call is read by the router and again by the caller). Undefined for
 * anything it is not sure of; zod then decides, and names what is wrong.
 */
export function fastToolCallRequest(raw: unknown): ToolCallRequest | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const { backend, tool, arguments: args, conversationId, cache } = raw as Record<string, unknown>;
  if (typeof backend !== "string" || !BACKEND_NAME_PATTERN.test(backend)) return undefined;
  if (typeof tool !== "string" || tool.length < 1 || tool.length > 256) return undefined;
  if (args !== undefined && (typeof args !== "object" || args === null || Array.isArray(args) || Object.getPrototypeOf(args) !== Object.prototype))
    return undefined;
  // zod's record drops a "__proto__" key; so must we, and zod does it best.
  if (args !== undefined && Object.hasOwn(args, "__proto__")) return undefined;
  if (conversationId !== undefined && (typeof conversationId !== "string" || !CONVERSATION_ID_PATTERN.test(conversationId))) return undefined;
  if (cache !== undefined && cache !== "default" && cache !== "bypass") return undefined;
  const request: ToolCallRequest = { backend, tool, arguments: (args ?? {}) as Record<string, unknown> };
  if (conversationId !== undefined) request.conversationId = conversationId;
  if (cache !== undefined) request.cache = cache;
  return request;
}

/** One field-level problem, e.g. in a tool's arguments. */
export const ValidationIssueSchema = z.object({
  field: z.string(),
  message: z.string(),
  type: z.string(),
});
export type ValidationIssue = z.infer<typeof ValidationIssueSchema>;

export const WireErrorSchema = z.object({
  code: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]),
  message: z.string(),
  retryable: z.boolean(),
  retryAfterMs: z.number().int().nonnegative().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type WireError = z.infer<typeof WireErrorSchema>;

export const ErrorReplySchema = z.object({ ok: z.literal(false), error: WireErrorSchema });
export type ErrorReply = z.infer<typeof ErrorReplySchema>;

/** An MCP CallToolResult, kept as the backend sent it (content, structuredContent, isError, _meta). */
export const CallToolResultSchema = z.looseObject({
  content: z.array(z.looseObject({ type: z.string() })).default([]),
  isError: z.boolean().optional(),
  structuredContent: z.record(z.string(), z.unknown()).optional(),
});
export type CallToolResult = z.infer<typeof CallToolResultSchema>;

export const CallMetaSchema = z.object({
  backend: z.string(),
  endpoint: z.string(),
  attempts: z.number().int().nonnegative(),
  /** false when the backend answered; otherwise the cache tier that did (`l1`: the replica's memory, `l2`: the shared KV bucket). */
  cached: z.union([z.literal(false), z.enum(["l1", "l2"])]),
  durationMs: z.number().nonnegative(),
});
export type CallMeta = z.infer<typeof CallMetaSchema>;

export const ToolCallOkReplySchema = z.object({ ok: z.literal(true), result: CallToolResultSchema, meta: CallMetaSchema });
export type ToolCallOkReply = z.infer<typeof ToolCallOkReplySchema>;

export const ToolCallReplySchema = z.discriminatedUnion("ok", [ToolCallOkReplySchema, ErrorReplySchema]);
export type ToolCallReply = z.infer<typeof ToolCallReplySchema>;

/** An MCP tool as listed by the backend (name, schemas, annotations), passed through as-is. */
export const ToolDescriptorSchema = z.looseObject({
  name: z.string(),
  title: z.string().optional(),
  description: z.string().optional(),
  inputSchema: z.looseObject({ type: z.literal("object") }),
  outputSchema: z.record(z.string(), z.unknown()).optional(),
  annotations: z
    .looseObject({
      title: z.string().optional(),
      readOnlyHint: z.boolean().optional(),
      destructiveHint: z.boolean().optional(),
      idempotentHint: z.boolean().optional(),
      openWorldHint: z.boolean().optional(),
    })
    .optional(),
});
export type ToolDescriptor = z.infer<typeof ToolDescriptorSchema>;

/** Body of `toolbus.v1.tools.list` (and `.backend.<b>.tools`); empty object lists every backend. */
export const ToolsListRequestSchema = z.object({ backend: BackendNameSchema.optional() });
export type ToolsListRequest = z.infer<typeof ToolsListRequestSchema>;

export const BackendToolsSchema = z.object({
  name: z.string(),
  /** Callers that sent a heartbeat recently. */
  liveCallers: z.number().int().nonnegative(),
  /** null while no caller has reported the tool list yet. */
  tools: z.array(ToolDescriptorSchema).nullable(),
});
export type BackendTools = z.infer<typeof BackendToolsSchema>;

export const ToolsListOkReplySchema = z.object({ ok: z.literal(true), backends: z.array(BackendToolsSchema) });
export type ToolsListOkReply = z.infer<typeof ToolsListOkReplySchema>;
export const ToolsListReplySchema = z.discriminatedUnion("ok", [ToolsListOkReplySchema, ErrorReplySchema]);
export type ToolsListReply = z.infer<typeof ToolsListReplySchema>;

/**
 * Published by every caller every `intervalMs` on `toolbus.v1.evt.caller.<backend>`. The router's
 * catalog forwards only to backends with a recent heartbeat, because a forwarded message never gets
 * a "no responders" answer.
 */
export const CallerHeartbeatSchema = z.object({
  backend: BackendNameSchema,
  workerId: z.string(),
  status: z.enum(["up", "down"]),
  /** Hash of the tool list; null until it has been fetched from the backend. */
  toolsVersion: z.string().nullable(),
  endpointsLive: z.number().int().nonnegative(),
  endpointsTotal: z.number().int().nonnegative(),
  intervalMs: z.number().int().positive(),
});
export type CallerHeartbeat = z.infer<typeof CallerHeartbeatSchema>;

/** Published on `toolbus.v1.evt.breaker.<backend>` at every breaker transition of an endpoint. */
export const BreakerEventSchema = z.object({
  backend: z.string(),
  endpoint: z.string(),
  from: z.enum(["closed", "open", "half-open"]),
  to: z.enum(["closed", "open", "half-open"]),
  reason: z.string(),
  workerId: z.string(),
  /** UTC, ISO-8601. */
  time: z.string(),
});
export type BreakerEvent = z.infer<typeof BreakerEventSchema>;

/** One caller's answer on `toolbus.v1.status.callers`. */
export const CallerStatusSchema = z.object({
  backend: z.string(),
  workerId: z.string(),
  toolsVersion: z.string().nullable(),
  endpoints: z.array(
    z.object({
      id: z.string(),
      live: z.boolean(),
      inFlight: z.number().int().nonnegative(),
      queued: z.number().int().nonnegative(),
      breaker: z.enum(["closed", "open", "half-open"]),
    }),
  ),
});
export type CallerStatus = z.infer<typeof CallerStatusSchema>;

/** Published on `toolbus.v1.cancel.<backend>` when a client aborts a call it sent with `requestId`. */
export const CancelRequestSchema = z.object({
  requestId: z.string().min(1).max(256),
  /** Why, for the logs (e.g. "aborted by the client"). */
  reason: z.string().max(256).optional(),
});
export type CancelRequest = z.infer<typeof CancelRequestSchema>;

/** What the health prober thinks of an endpoint. */
export const HealthState = {
  /** Not probed yet. */
  unknown: "unknown",
  healthy: "healthy",
  /** Answers, but slower than the backend's `degraded` threshold. */
  degraded: "degraded",
  /** Failed `unhealthyAfter` probes in a row. */
  unhealthy: "unhealthy",
  /** Unhealthy, and not found in its port range after every rediscovery attempt; still probed, slowly. */
  lost: "lost",
} as const;
export type HealthState = (typeof HealthState)[keyof typeof HealthState];
export const HealthStateSchema = z.enum(["unknown", "healthy", "degraded", "unhealthy", "lost"]);

/**
 * Published on `toolbus.v1.evt.health.<backend>` when an endpoint's state changes (`change: true`)
 * and as a periodic heartbeat; the latest per endpoint is kept in KV `toolbus_health`.
 */
export const HealthEventSchema = z.object({
  backend: z.string(),
  /** `<backend>#<n>`, the same id the callers use. */
  endpoint: z.string(),
  state: HealthStateSchema,
  previous: HealthStateSchema,
  /** Why it is in this state: the last probe's outcome. */
  reason: z.string(),
  /** The last successful probe's round trip, in ms. */
  latencyMs: z.number().nonnegative().nullable(),
  /** UTC, ISO-8601: when it entered this state. */
  since: z.string(),
  /** UTC, ISO-8601: when this event was sent. */
  time: z.string(),
  /** The prober that sent it. */
  proberId: z.string(),
  /** True when the state changed with this event; false for a heartbeat. */
  change: z.boolean(),
  /** For a stdio child: the caller replica that owns it (each replica has children of its own). */
  caller: z.string().optional(),
});
export type HealthEvent = z.infer<typeof HealthEventSchema>;

/** The answer on `toolbus.v1.health.get`: the latest event of every endpoint, by backend and endpoint. */
export const HealthTableReplySchema = z.object({ ok: z.literal(true), endpoints: z.array(HealthEventSchema) });
export type HealthTableReply = z.infer<typeof HealthTableReplySchema>;

/** Published by a caller on `toolbus.v1.health.report.<backend>`: one probe of a stdio child it owns. */
export const HealthReportSchema = z.object({
  backend: BackendNameSchema,
  endpoint: z.string(),
  /** The caller replica (its worker id). */
  caller: z.string(),
  ok: z.boolean(),
  latencyMs: z.number().nonnegative().optional(),
  reason: z.string().optional(),
  /** How often this caller reports: the prober forgets a caller silent for several intervals. */
  intervalMs: z.number().int().positive(),
});
export type HealthReport = z.infer<typeof HealthReportSchema>;

/**
 * Published on `toolbus.v1.evt.endpoint.<backend>` (and kept in KV `toolbus_endpoints`, key
 * `<backend>.<n>`) when the prober finds an HTTP endpoint's server on another port of its range.
 * Callers replace the port in their own configured URL: no URL, which may hold a secret, crosses the bus.
 */
export const EndpointMovedSchema = z.object({
  backend: z.string(),
  endpoint: z.string(),
  oldPort: z.number().int().nonnegative(),
  newPort: z.number().int().positive(),
  /** The MCP server name that answered there (the one expected). */
  server: z.string(),
  proberId: z.string(),
  time: z.string(),
});
export type EndpointMoved = z.infer<typeof EndpointMovedSchema>;

/** Published by every cache replica on `toolbus.v1.evt.cache.heartbeat`, and as its answer to a discovering router. */
export const CacheHeartbeatSchema = z.object({
  workerId: z.string(),
  status: z.enum(["up", "down"]),
  intervalMs: z.number().int().positive(),
});
export type CacheHeartbeat = z.infer<typeof CacheHeartbeatSchema>;

/** Body of `toolbus.v1.cache.invalidate`: every entry of a backend, or of one of its tools. */
export const CacheInvalidateRequestSchema = z.object({
  backend: BackendNameSchema,
  tool: z.string().min(1).max(256).optional(),
});
export type CacheInvalidateRequest = z.infer<typeof CacheInvalidateRequestSchema>;

/** The answer to an invalidation. */
export const CacheInvalidateOkReplySchema = z.object({
  ok: z.literal(true),
  /** Entries purged from the shared tier (or, with `shared: false`, from the answering replica's memory). */
  removed: z.number().int().nonnegative(),
  /** False when the cache runs without a shared tier (no JetStream). */
  shared: z.boolean(),
});
export type CacheInvalidateOkReply = z.infer<typeof CacheInvalidateOkReplySchema>;
export const CacheInvalidateReplySchema = z.discriminatedUnion("ok", [CacheInvalidateOkReplySchema, ErrorReplySchema]);
export type CacheInvalidateReply = z.infer<typeof CacheInvalidateReplySchema>;

/** Published on `toolbus.v1.evt.cache.invalidated` once the shared tier is clean: every replica drops these from its memory. */
export const CacheInvalidatedSchema = z.object({
  backend: BackendNameSchema,
  tool: z.string().min(1).max(256).optional(),
  /** Why, for the logs: "requested", "tools changed", "server restarted", ... */
  reason: z.string(),
  workerId: z.string(),
});
export type CacheInvalidated = z.infer<typeof CacheInvalidatedSchema>;

/** Published by a caller on `toolbus.v1.evt.changed.<backend>` when cached results of the backend may be stale. */
export const BackendChangedSchema = z.object({
  backend: BackendNameSchema,
  endpoint: z.string(),
  /** tools: notifications/tools/list_changed; resources: a resource changed; restarted: a new connection or session. */
  what: z.enum(["tools", "resources", "restarted"]),
  /** The resource, for `resources`. */
  uri: z.string().optional(),
  workerId: z.string(),
  time: z.string(),
});
export type BackendChanged = z.infer<typeof BackendChangedSchema>;

/**
 * The first line of a `toolbus.v1.cache.set` message; the rest is the result's JSON as the caller
 * answered it, so the cache stores and serves it without parsing it.
 */
export const CacheSetHeadSchema = z.object({
  key: z.string().min(1).max(1024),
  backend: BackendNameSchema,
  tool: z.string().min(1).max(256),
  endpoint: z.string(),
  ttlMs: z.number().int().positive(),
  /** How long ago the call started, in ms (relative, like budgets): a result of a call that started before an invalidation is not stored. */
  ageMs: z.number().nonnegative(),
});
export type CacheSetHead = z.infer<typeof CacheSetHeadSchema>;

/** One cache replica's answer on `toolbus.v1.status.caches`. */
export const CacheStatusSchema = z.object({
  workerId: z.string(),
  /** Lookups answered from memory, from the shared tier, and not answered (sent on to the backend). */
  hits: z.object({ l1: z.number().int().nonnegative(), l2: z.number().int().nonnegative() }),
  misses: z.number().int().nonnegative(),
  stores: z.number().int().nonnegative(),
  evictions: z.number().int().nonnegative(),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  /** False when JetStream is not available: this replica caches in memory only. */
  shared: z.boolean(),
});
export type CacheStatus = z.infer<typeof CacheStatusSchema>;
