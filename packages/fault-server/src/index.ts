export { createFaultServer, startHttpFaultServer, newState } from "./server.js";
export type { FaultStats, FaultState, HttpFaultServer, UnknownSessionAnswer } from "./server.js";
