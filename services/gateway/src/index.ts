export { startGateway, runStdioGateway } from "./gateway.js";
export type { GatewayOptions, GatewayWorker } from "./gateway.js";
export { nameUnion } from "./naming.js";
export type { NamingOptions, Named } from "./naming.js";
