export { startRouter } from "./router.js";
export type { RouterOptions, RouterWorker } from "./router.js";
export { Catalog } from "./catalog.js";
