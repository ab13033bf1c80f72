export { createFaultServer, startHttpFaultServer, newState } from "./server.js";
export type { FaultStats, FaultState, HttpFaultServer } from "./server.js";
