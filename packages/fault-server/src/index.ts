export { createFaultServer, startHttpFaultServer, newStats } from "./server.js";
export type { FaultStats, HttpFaultServer } from "./server.js";
