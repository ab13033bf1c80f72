export { startHealthProber } from "./prober.js";
export type { HealthProberOptions, HealthProberWorker } from "./prober.js";
export { HealthTracker } from "./tracker.js";
export type { ProbeResult, Transition } from "./tracker.js";
