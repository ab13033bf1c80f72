export { startCaller } from "./caller.js";
export type { CallerOptions, CallerWorker } from "./caller.js";
export type { Endpoint } from "./endpoint.js";
