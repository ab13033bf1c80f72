export { ToolIndex, toolsVersion } from "./tool-index.js";
export type { ArgumentCheck } from "./tool-index.js";
export { checkToolCall, unknownBackend } from "./check.js";
