export { ToolbusClient } from "./client.js";
export type { ToolbusClientOptions, CallOptions, ToolCallOutcome } from "./client.js";
export { toolbusConnectionOptions, NatsCredsError, isNatsCredsError } from "./connection.js";
export type { NatsConnectionSettings } from "./connection.js";
export { ToolbusError, isToolbusError, ErrorCode } from "./errors.js";
