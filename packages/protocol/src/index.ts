export { SUBJECT_PREFIX, BACKEND_NAME_PATTERN, isBackendName, subjects, queueGroups, kvBuckets } from "./subjects.js";
export { Headers } from "./headers.js";
export { ErrorCode, isRetryableCode } from "./errors.js";
export { canonicalJson } from "./canonical-json.js";
export { monotonicNow, readBudget, remainingMs, stampBudget, DEFAULT_MAX_BUDGET_MS, FORWARD_MARGIN_MS } from "./budget.js";
export type { BudgetReading } from "./budget.js";
export {
  BackendNameSchema,
  ToolCallRequestSchema,
  ValidationIssueSchema,
  WireErrorSchema,
  ErrorReplySchema,
  CallToolResultSchema,
  CallMetaSchema,
  ToolCallOkReplySchema,
  ToolCallReplySchema,
  ToolDescriptorSchema,
  ToolsListRequestSchema,
  BackendToolsSchema,
  ToolsListOkReplySchema,
  ToolsListReplySchema,
  CallerHeartbeatSchema,
  BreakerEventSchema,
  CallerStatusSchema,
  CancelRequestSchema,
  HealthState,
  HealthStateSchema,
  HealthEventSchema,
  HealthTableReplySchema,
  HealthReportSchema,
  EndpointMovedSchema,
} from "./schemas.js";
export type {
  ToolCallRequest,
  ToolCallRequestInput,
  ValidationIssue,
  WireError,
  ErrorReply,
  CallToolResult,
  CallMeta,
  ToolCallOkReply,
  ToolCallReply,
  ToolDescriptor,
  ToolsListRequest,
  BackendTools,
  ToolsListOkReply,
  ToolsListReply,
  CallerHeartbeat,
  BreakerEvent,
  CallerStatus,
  CancelRequest,
  HealthEvent,
  HealthTableReply,
  HealthReport,
  EndpointMoved,
} from "./schemas.js";
export { encodeJson, decodeJson, parseJsonOrUndefined, decodeRequest, decodeToolsListRequest, errorReply, issuesFromZod } from "./wire.js";
export type { Decoded } from "./wire.js";
