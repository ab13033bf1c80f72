import { ToolIndex } from "@toolbus/tool-index";
import type { ToolDescriptor } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";
import type { Endpoint } from "./endpoint.js";

/** Timeout for a tools/list refresh. */
const LIST_TOOLS_TIMEOUT_MS = 10_000;

/**
 * The backend's tool list as this caller last fetched it. Refreshed when an endpoint becomes live and
 * on `notifications/tools/list_changed`: one refresh at a time, and a change during a refresh triggers
 * one more, from whichever endpoint is live then.
 */
export class ToolList {
  #index: ToolIndex | null = null;
  #refreshing: Promise<void> | undefined;
  #again = false;

  constructor(
    private readonly endpoints: readonly Endpoint[],
    private readonly log: Logger,
    /** The list changed (a new version): the caller announces it. */
    private readonly onChange: () => void,
  ) {}

  /** null until the list has been fetched once (the backend has been down since start). */
  get index(): ToolIndex | null {
    return this.#index;
  }

  refresh(endpoint: Endpoint): Promise<void> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        const tools = (await endpoint.listTools(LIST_TOOLS_TIMEOUT_MS)) as ToolDescriptor[];
        const next = new ToolIndex(tools);
        if (next.version !== this.#index?.version) {
          this.#index = next;
          this.log.info({ tools: tools.length, toolsVersion: next.version }, "backend tools loaded");
          this.onChange();
        }
      } catch (err) {
        this.log.warn({ endpoint: endpoint.id, err: (err as Error).message }, "could not list backend tools");
      } finally {
        this.#refreshing = undefined;
        if (this.#again) {
          this.#again = false;
          const live = this.endpoints.find((e) => e.live);
          if (live) void this.refresh(live);
        }
      }
    })();
    return this.#refreshing;
  }
}
