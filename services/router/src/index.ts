export { startRouter } from "./router.js";
export type { RouterOptions, RouterWorker } from "./router.js";
export { LiveBackends } from "./live-backends.js";
export { CacheHandoff } from "./cache-handoff.js";
