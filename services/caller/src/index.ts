export { startCaller } from "./caller.js";
export type { CallerOptions, CallerWorker } from "./caller.js";
export type { Endpoint } from "./endpoint.js";
export { startLlmCaller } from "./llm/caller.js";
export type { LlmCallerOptions, LlmCallerWorker } from "./llm/caller.js";
