export { ExitCode, exitCodeFor } from "./exit-codes.js";
export { startLocalNats, isListening, hostPort } from "./local-nats.js";
export type { LocalNats } from "./local-nats.js";
