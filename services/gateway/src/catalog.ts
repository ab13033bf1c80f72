import type { Prompt, Resource, ResourceTemplate, Tool } from "@modelcontextprotocol/sdk/types.js";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import { RequestStrategy, type Msg, type NatsConnection } from "nats";
import {
  BackendChangedSchema,
  CallerHeartbeatSchema,
  ToolsListOkReplySchema,
  decodeJson,
  encodeJson,
  parseJsonOrUndefined,
  subjects,
  type CallerHeartbeat,
  type ForwardedMcpMethod,
} from "@toolbus/protocol";
import type { Logger, Metrics } from "@toolbus/runtime";
import { nameUnion, type Named, type NamingOptions } from "./naming.js";

/** A caller is presumed gone after this many heartbeat intervals without news (as the router does). */
const MISSED_BEATS = 3;
const FETCH_TIMEOUT_MS = 5_000;
/** Changes that arrive together (a backend's callers all beating at once) make one new list. */
const SETTLE_MS = 50;

interface CallerSeen {
  lastSeen: number;
  intervalMs: number;
  endpointsLive: number;
  toolsVersion: string | null;
}

interface BackendTools {
  version: string;
  tools: Tool[];
}

/** A backend's resources, resource templates and prompts (empty where it has none). */
interface BackendExtras {
  resources: Resource[];
  templates: ResourceTemplate[];
  prompts: Prompt[];
}

/** What changed in the union: each kind has its own MCP list_changed notification. */
export type CatalogChange = "tools" | "resources" | "prompts";

/** The most items of one kind taken from one backend (a server that pages forever is cut off). */
const MAX_ITEMS = 10_000;

/**
 * What the front door serves: the union of the tools of every backend that is up, named for the union.
 * It learns who is up from the callers' heartbeats (a backend with no caller, or whose callers have no
 * live endpoint, is left out: fail-open, the rest is served) and each backend's tools from its callers,
 * fetched again when a heartbeat shows a new tools version. Every replica keeps its own copy; they agree
 * because they hear the same heartbeats.
 */
export class Catalog {
  readonly #callers = new Map<string, Map<string, CallerSeen>>();
  readonly #tools = new Map<string, BackendTools>();
  readonly #fetching = new Set<string>();
  #union = new Map<string, Named<Tool>>();
  readonly #extras = new Map<string, BackendExtras>();
  #prompts = new Map<string, Named<Prompt>>();
  /** Resources by URI (a URI names one resource: the first backend, by name, keeps a URI two offer). */
  #resources = new Map<string, { backend: string; resource: Resource }>();
  #templates: Array<{ backend: string; template: ResourceTemplate; pattern: RegExp }> = [];
  #extrasSignature = { resources: "", prompts: "" };
  /** What the union was made from: it changes only when this does. */
  #signature = "";
  #timer: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  readonly #listeners = new Set<(change: CatalogChange) => void>();
  #unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    private readonly client: ToolbusClient,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly naming: NamingOptions,
  ) {}

  /** Listen to heartbeats and ask every running caller to announce itself now. */
  async start(discoverMs = 250): Promise<void> {
    const sub = this.nc.subscribe(subjects.callerHeartbeatAll(), { callback: (err, msg) => err || this.#heard(msg) });
    // A backend's resources changed, or it restarted: its resources and prompts are fetched again.
    const changed = this.nc.subscribe(subjects.backendChangedAll(), {
      callback: (err, msg) => {
        if (err) return;
        const event = BackendChangedSchema.safeParse(parseJsonOrUndefined(msg.data));
        if (!event.success || event.data.what === "tools") return;
        this.#extras.delete(event.data.backend);
        this.#schedule();
      },
    });
    this.#unsubscribe = async () => {
      await sub.drain();
      await changed.drain();
    };
    // A caller that stops beating leaves the list after MISSED_BEATS intervals.
    this.#sweep = setInterval(() => this.#schedule(), 1_000);
    this.#sweep.unref();
    try {
      const replies = await this.nc.requestMany(subjects.callerDiscovery(), encodeJson({}), { strategy: RequestStrategy.Timer, maxWait: discoverMs });
      for await (const msg of replies) this.#heard(msg);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, "caller discovery failed; waiting for heartbeats");
    }
    await this.refresh();
  }

  async stop(): Promise<void> {
    clearInterval(this.#sweep);
    clearTimeout(this.#timer);
    await this.#unsubscribe?.();
  }

  /** Called whenever the union changes (a backend joined or left, or its tools, resources or prompts changed). */
  onChange(listener: (change: CatalogChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The union's tools a client may see (`allowed` says which backends its token reaches). */
  tools(allowed: (backend: string) => boolean): Tool[] {
    return visible(this.#union, allowed);
  }

  /** Where a tool of the union lives. */
  resolve(name: string): { backend: string; tool: string; descriptor: Tool } | undefined {
    const named = this.#union.get(name);
    return named && { backend: named.backend, tool: named.original, descriptor: named.item };
  }

  prompts(allowed: (backend: string) => boolean): Prompt[] {
    return visible(this.#prompts, allowed);
  }

  resolvePrompt(name: string): { backend: string; prompt: string } | undefined {
    const named = this.#prompts.get(name);
    return named && { backend: named.backend, prompt: named.original };
  }

  resources(allowed: (backend: string) => boolean): Resource[] {
    return [...this.#resources.values()].filter((r) => allowed(r.backend)).map((r) => r.resource);
  }

  templates(allowed: (backend: string) => boolean): ResourceTemplate[] {
    return this.#templates.filter((t) => allowed(t.backend)).map((t) => t.template);
  }

  /** The backend that serves `uri`: one that listed it, else one whose template matches it. */
  resolveResource(uri: string, allowed: (backend: string) => boolean): string | undefined {
    const listed = this.#resources.get(uri);
    if (listed && allowed(listed.backend)) return listed.backend;
    return this.#templates.find((t) => allowed(t.backend) && t.pattern.test(uri))?.backend;
  }

  /** Backends that are up now (a caller heard recently with a live endpoint). */
  upBackends(): string[] {
    const now = Date.now();
    const up: string[] = [];
    for (const [backend, callers] of this.#callers) {
      for (const [id, seen] of callers) if (now - seen.lastSeen > seen.intervalMs * MISSED_BEATS) callers.delete(id);
      if ([...callers.values()].some((c) => c.endpointsLive > 0)) up.push(backend);
    }
    return up.sort();
  }

  #heard(msg: Msg): void {
    let beat: CallerHeartbeat;
    try {
      beat = CallerHeartbeatSchema.parse(decodeJson(msg.data));
    } catch {
      return;
    }
    let callers = this.#callers.get(beat.backend);
    if (!callers) this.#callers.set(beat.backend, (callers = new Map()));
    if (beat.status === "down") callers.delete(beat.workerId);
    else callers.set(beat.workerId, { lastSeen: Date.now(), intervalMs: beat.intervalMs, endpointsLive: beat.endpointsLive, toolsVersion: beat.toolsVersion });
    this.#schedule();
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.refresh();
    }, SETTLE_MS);
  }

  /** Fetch what changed and make the union again; listeners hear of it if it differs. */
  async refresh(): Promise<void> {
    const up = this.upBackends();
    await Promise.all(
      up.map(async (backend) => {
        const version = this.#newestVersion(backend);
        if (version === null || this.#tools.get(backend)?.version === version || this.#fetching.has(backend)) return;
        await this.#fetch(backend);
      }),
    );
    const present = up.filter((b) => this.#tools.has(b));
    await Promise.all(present.filter((b) => !this.#extras.has(b)).map((b) => this.#fetchExtras(b)));
    this.#unionExtras(present);
    const signature = JSON.stringify(present.map((b) => [b, this.#tools.get(b)!.version]));
    this.metrics.gatewayBackendsLeftOut.set(this.#callers.size - present.length);
    if (signature === this.#signature) return;
    const before = this.#signature;
    this.#signature = signature;
    this.#union = nameUnion(new Map(present.map((b) => [b, this.#tools.get(b)!.tools])), this.naming, (name, backend, keptFrom) =>
      this.log.warn({ tool: name, backend, keptFrom }, "two backends offer a tool of the same name; the gateway serves the first (set gateway.tools.prefix)"),
    );
    const left = [...this.#callers.keys()].filter((b) => !present.includes(b));
    this.log.info({ backends: present, leftOut: left, tools: this.#union.size }, "gateway tool list changed");
    if (before !== "") this.#emit("tools");
  }

  #emit(change: CatalogChange): void {
    for (const listener of this.#listeners) listener(change);
  }

  /** The union of the resources, templates and prompts of `present`; listeners hear what changed. */
  #unionExtras(present: string[]): void {
    const byName = new Map(present.map((b) => [b, this.#extras.get(b)?.prompts ?? []]));
    const resources = new Map<string, { backend: string; resource: Resource }>();
    const templates: Array<{ backend: string; template: ResourceTemplate; pattern: RegExp }> = [];
    for (const backend of [...present].sort()) {
      const extras = this.#extras.get(backend);
      if (!extras) continue;
      for (const resource of extras.resources) if (!resources.has(resource.uri)) resources.set(resource.uri, { backend, resource });
      for (const template of extras.templates) templates.push({ backend, template, pattern: templatePattern(template.uriTemplate) });
    }
    const signatures = {
      resources: JSON.stringify([[...resources.entries()].map(([uri, r]) => [uri, r.backend]), templates.map((t) => [t.backend, t.template.uriTemplate])]),
      prompts: JSON.stringify([...byName.entries()].map(([b, ps]) => [b, ps.map((p) => p.name)])),
    };
    this.#resources = resources;
    this.#templates = templates;
    this.#prompts = nameUnion(byName, this.naming, (name, backend, keptFrom) =>
      this.log.warn({ prompt: name, backend, keptFrom }, "two backends offer a prompt of the same name; the gateway serves the first"),
    );
    for (const kind of ["resources", "prompts"] as const) {
      const before = this.#extrasSignature[kind];
      this.#extrasSignature[kind] = signatures[kind];
      if (before !== "" && before !== signatures[kind]) this.#emit(kind);
    }
  }

  async #fetchExtras(backend: string): Promise<void> {
    const [resources, templates, prompts] = await Promise.all([
      this.#list<Resource>(backend, "resources/list", "resources"),
      this.#list<ResourceTemplate>(backend, "resources/templates/list", "resourceTemplates"),
      this.#list<Prompt>(backend, "prompts/list", "prompts"),
    ]);
    this.#extras.set(backend, { resources, templates, prompts });
  }

  /** Every page of one list; empty when the backend does not offer it (or cannot answer now). */
  async #list<T>(backend: string, method: ForwardedMcpMethod, key: string): Promise<T[]> {
    const items: T[] = [];
    let cursor: string | undefined;
    try {
      do {
        const page = await this.client.mcpRequest(backend, method, cursor ? { cursor } : {}, { timeoutMs: FETCH_TIMEOUT_MS });
        items.push(...((page[key] as T[] | undefined) ?? []));
        cursor = typeof page.nextCursor === "string" ? page.nextCursor : undefined;
      } while (cursor && items.length < MAX_ITEMS);
    } catch (err) {
      // -32601: the server has no such capability. Anything else is worth a line; the list is empty for now.
      const code = isToolbusError(err) ? err.details?.jsonRpcCode : undefined;
      if (code !== -32601) this.log.debug({ backend, method, err: (err as Error).message }, "could not list a backend's resources or prompts");
    }
    return items;
  }

  #newestVersion(backend: string): string | null {
    let version: string | null = null;
    for (const c of this.#callers.get(backend)?.values() ?? []) if (c.endpointsLive > 0 && c.toolsVersion !== null) version = c.toolsVersion;
    return version;
  }

  async #fetch(backend: string): Promise<void> {
    this.#fetching.add(backend);
    try {
      const msg = await this.nc.request(subjects.backendTools(backend), encodeJson({}), { timeout: FETCH_TIMEOUT_MS });
      const reply = ToolsListOkReplySchema.parse(decodeJson(msg.data));
      const tools = reply.backends[0]?.tools;
      if (tools) this.#tools.set(backend, { version: this.#newestVersion(backend) ?? "", tools: tools as Tool[] });
      // A new tools version may come with new resources or prompts (a restarted server): fetched again.
      this.#extras.delete(backend);
    } catch (err) {
      // Left out until a later heartbeat lets it try again: fail-open, the other backends are served.
      this.log.warn({ backend, err: (err as Error).message }, "could not fetch a backend's tools; it is left out of the gateway's list for now");
    } finally {
      this.#fetching.delete(backend);
    }
  }
}

/** A URI template (RFC 6570, the simple forms servers use) as a pattern a URI must match whole. */
export function templatePattern(template: string): RegExp {
  let pattern = "";
  for (const part of template.split(/(\{[^}]*\})/)) {
    if (part.startsWith("{") && part.endsWith("}")) {
      // {var} stops at a slash; {+var}, {/var}, {#var}... may contain one.
      pattern += /^\{[a-zA-Z0-9_,.]*\}$/.test(part) ? "[^/]+" : ".*";
    } else pattern += part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${pattern}$`);
}

/** The items of a union that `allowed` backends offer, each under its name in the union. */
function visible<T extends { name: string }>(union: ReadonlyMap<string, Named<T>>, allowed: (backend: string) => boolean): T[] {
  const out: T[] = [];
  for (const named of union.values()) if (allowed(named.backend)) out.push(named.name === named.original ? named.item : { ...named.item, name: named.name });
  return out;
}
