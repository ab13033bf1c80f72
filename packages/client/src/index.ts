export { ToolbusClient } from "./client.js";
export type { ToolbusClientOptions, CallOptions, ToolCallOutcome } from "./client.js";
export { ToolbusError, isToolbusError, ErrorCode } from "./errors.js";
