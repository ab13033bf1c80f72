export { startCache } from "./cache.js";
export type { CacheOptions, CacheWorker } from "./cache.js";
export { MemoryTier, SharedTier, encodeShared, decodeShared } from "./tiers.js";
export type { Entry } from "./tiers.js";
