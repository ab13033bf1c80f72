export { startLlmFaultServer, CANNED_TEXT } from "./server.js";
export type { LlmFaultServer, LlmFaultStats } from "./server.js";
