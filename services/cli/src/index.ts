export { ExitCode, exitCodeFor } from "./exit-codes.js";
export { startLocalNats, isListening, hostPort, endWithUs } from "./local-nats.js";
export type { LocalNats } from "./local-nats.js";
export { allWorkers, router, caller, cache, chatLogWriter, healthProber, worker, WORKER_NAMES } from "./workers.js";
export type { WorkerName } from "./workers.js";
