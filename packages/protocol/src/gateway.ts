import { z } from "zod";
import { BackendNameSchema, ErrorReplySchema } from "./schemas.js";

/**
 * One progress notification of a backend's, relayed to the client that asked for progress (header
 * `Toolbus-Progress-To` on its call): the MCP `notifications/progress` params without the token,
 * which is the client's own.
 */
export const ToolProgressSchema = z.object({
  progress: z.number(),
  total: z.number().optional(),
  message: z.string().optional(),
});
export type ToolProgress = z.infer<typeof ToolProgressSchema>;

/**
 * Published on `toolbus.v1.gateway.cancel` when an MCP client cancels a request: every gateway replica
 * hears it and the one running that request aborts it (which cancels it at the backend). The request
 * is named by the MCP session and the client's own JSON-RPC id, which any replica can read off the
 * client's `notifications/cancelled`.
 */
export const GatewayCancelSchema = z.object({
  session: z.string().min(1).max(256),
  requestId: z.union([z.string().max(256), z.number()]),
  reason: z.string().max(256).optional(),
});
export type GatewayCancel = z.infer<typeof GatewayCancelSchema>;

/** The MCP methods besides tools that a caller forwards to its backend as they are (`toolbus.v1.backend.<b>.mcp`). */
export const FORWARDED_MCP_METHODS = ["resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get"] as const;
export type ForwardedMcpMethod = (typeof FORWARDED_MCP_METHODS)[number];

export const McpForwardRequestSchema = z.object({
  backend: BackendNameSchema,
  method: z.enum(FORWARDED_MCP_METHODS),
  params: z.record(z.string(), z.unknown()).default({}),
});
export type McpForwardRequest = z.infer<typeof McpForwardRequestSchema>;
export type McpForwardRequestInput = z.input<typeof McpForwardRequestSchema>;

export const McpForwardOkReplySchema = z.object({ ok: z.literal(true), result: z.looseObject({}) });
export type McpForwardOkReply = z.infer<typeof McpForwardOkReplySchema>;
export const McpForwardReplySchema = z.discriminatedUnion("ok", [McpForwardOkReplySchema, ErrorReplySchema]);
export type McpForwardReply = z.infer<typeof McpForwardReplySchema>;
