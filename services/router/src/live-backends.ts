import type { Msg, NatsConnection } from "nats";
import { ToolIndex } from "@toolbus/tool-index";
import { CallerHeartbeatSchema, ToolsListOkReplySchema, decodeJson, encodeJson, subjects, type BackendTools, type CallerHeartbeat } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";
import { discoverAll } from "./discover.js";

/** A caller is presumed gone after this many heartbeat intervals without news. */
const MISSED_BEATS = 3;
const FETCH_TOOLS_TIMEOUT_MS = 5_000;

interface CallerState {
  lastSeen: number;
  intervalMs: number;
  endpointsLive: number;
}

interface BackendEntry {
  readonly configured: boolean;
  readonly callers: Map<string, CallerState>;
  index: ToolIndex | null;
  /** The tools version we are fetching or last failed to fetch, to avoid fetching it in a loop. */
  fetching: string | null;
}

/**
 * What the router knows: the configured backends, which of them have a live caller (from heartbeats),
 * and each one's tools (fetched from a caller whenever a heartbeat shows a new tools version).
 */
export class LiveBackends {
  readonly #backends = new Map<string, BackendEntry>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    configured: readonly string[],
    private readonly now: () => number = Date.now,
  ) {
    for (const name of configured) this.#backends.set(name, { configured: true, callers: new Map(), index: null, fetching: null });
  }

  get names(): string[] {
    return [...this.#backends.keys()].sort();
  }

  has(backend: string): boolean {
    return this.#backends.has(backend);
  }

  index(backend: string): ToolIndex | null {
    return this.#backends.get(backend)?.index ?? null;
  }

  /** Callers of `backend` heard from recently. Forgets the ones that went quiet. */
  liveCallers(backend: string): number {
    const entry = this.#backends.get(backend);
    if (!entry) return 0;
    const now = this.now();
    for (const [id, state] of entry.callers) {
      if (now - state.lastSeen > state.intervalMs * MISSED_BEATS) entry.callers.delete(id);
    }
    return entry.callers.size;
  }

  describe(backend: string): BackendTools {
    const index = this.index(backend);
    return { name: backend, liveCallers: this.liveCallers(backend), tools: index ? [...index.tools] : null };
  }

  /** Subscribe to caller heartbeats; returns a function that unsubscribes. */
  listen(): () => Promise<void> {
    const sub = this.nc.subscribe(subjects.callerHeartbeatAll(), { callback: (err, msg) => err || this.#heard(msg) });
    return () => sub.drain();
  }

  /**
   * Ask every running caller to announce itself now, and take what arrives within `maxWaitMs`. A router
   * that starts among running callers then serves with a full catalog instead of waiting a heartbeat.
   */
  discover(maxWaitMs: number): Promise<void> {
    return discoverAll(this.nc, subjects.callerDiscovery(), maxWaitMs, (msg) => this.#heard(msg), this.log, "caller");
  }

  #heard(msg: Msg): void {
    let beat: CallerHeartbeat;
    try {
      beat = CallerHeartbeatSchema.parse(decodeJson(msg.data));
    } catch {
      this.log.debug({ subject: msg.subject }, "ignoring malformed caller heartbeat");
      return;
    }
    this.onHeartbeat(beat);
  }

  onHeartbeat(beat: CallerHeartbeat): void {
    let entry = this.#backends.get(beat.backend);
    if (!entry) {
      // A caller deployed with a backend this router's config does not name: serve it all the same.
      entry = { configured: false, callers: new Map(), index: null, fetching: null };
      this.#backends.set(beat.backend, entry);
      this.log.info({ backend: beat.backend }, "discovered a backend from its caller's heartbeat");
    }
    if (beat.status === "down") {
      entry.callers.delete(beat.workerId);
      return;
    }
    const isNew = !entry.callers.has(beat.workerId);
    entry.callers.set(beat.workerId, { lastSeen: this.now(), intervalMs: beat.intervalMs, endpointsLive: beat.endpointsLive });
    if (isNew) this.log.info({ backend: beat.backend, caller: beat.workerId }, "caller joined");
    if (beat.toolsVersion !== null && beat.toolsVersion !== entry.index?.version && beat.toolsVersion !== entry.fetching) {
      void this.#fetchTools(beat.backend, entry, beat.toolsVersion);
    }
  }

  async #fetchTools(backend: string, entry: BackendEntry, version: string): Promise<void> {
    entry.fetching = version;
    try {
      const msg = await this.nc.request(subjects.backendTools(backend), encodeJson({}), { timeout: FETCH_TOOLS_TIMEOUT_MS });
      const reply = ToolsListOkReplySchema.parse(decodeJson(msg.data));
      const tools = reply.backends[0]?.tools;
      if (tools) {
        entry.index = new ToolIndex(tools);
        this.log.info({ backend, tools: tools.length, toolsVersion: entry.index.version }, "backend tools loaded");
      }
      entry.fetching = null;
    } catch (err) {
      this.log.warn({ backend, err: (err as Error).message }, "could not fetch backend tools; will retry on the next heartbeat");
      // Clear so the next heartbeat tries again.
      entry.fetching = null;
    }
  }
}
