export { ToolbusClient } from "./client.js";
export type { ToolbusClientOptions, CallOptions, ToolCallOutcome, HealthOptions, HealthWatch } from "./client.js";
export { HealthState } from "@toolbus/protocol";
export type { HealthEvent, CacheStatus, ChatEvent } from "@toolbus/protocol";
export { ChatEventType, newEventId } from "@toolbus/protocol";
export { toolbusConnectionOptions, NatsCredsError, isNatsCredsError } from "./connection.js";
export type { NatsConnectionSettings } from "./connection.js";
export { ToolbusError, isToolbusError, ErrorCode } from "./errors.js";
