export { startCaller } from "./caller.js";
export type { CallerOptions, CallerWorker } from "./caller.js";
export type { Endpoint } from "./endpoint.js";
export type { LlmCallerOptions, LlmCallerWorker } from "./llm/caller.js";
import type { WorkerDeps } from "@toolbus/runtime";
import type { LlmCallerOptions, LlmCallerWorker } from "./llm/caller.js";

/** Start the caller of an LLM backend (its code, and undici's, loaded only then). */
export async function startLlmCaller(deps: WorkerDeps, options: LlmCallerOptions): Promise<LlmCallerWorker> {
  const { startLlmCaller: start } = await import("./llm/caller.js");
  return start(deps, options);
}
