import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { classify, guardedFetch, httpTarget, portOf, within } from "@toolbus/mcp-http";
import { Agent } from "undici";
import type { ProbeResult } from "./tracker.js";

/** What a probe may read of an answer: a ping's is a few bytes. */
const MAX_PROBE_RESPONSE_BYTES = 64 * 1024;

/**
 * Probes one streamable-HTTP MCP endpoint with a session of its own: `initialize` once, then an MCP
 * `ping` per probe. A session the server forgot is replaced at once (the caller's rules: 404, or a
 * 4xx naming the session), so a restart costs one probe nothing; an unreachable server drops it.
 */
export class HttpProbe {
  #client: Client | undefined;
  /** The MCP server name (serverInfo.name) the endpoint gave at its first initialize: what rediscovery accepts. */
  serverName: string | undefined;
  readonly #agent = new Agent({ connections: 2, keepAliveTimeout: 30_000 });
  readonly #target: { url: URL; headers: Record<string, string> };

  constructor(url: string, headers: Readonly<Record<string, string>>) {
    this.#target = httpTarget(url, headers);
  }

  async probe(timeoutMs: number): Promise<ProbeResult> {
    const started = performance.now();
    const left = (): number => Math.max(1, Math.floor(timeoutMs - (performance.now() - started)));
    for (let attempt = 1; ; attempt++) {
      let client = this.#client;
      const sessionSent = client !== undefined;
      try {
        if (!client) client = this.#client = await this.#connect(left());
        const pinged = performance.now();
        await client.ping({ timeout: left() });
        return { ok: true, latencyMs: Math.round((performance.now() - pinged) * 1000) / 1000 };
      } catch (err) {
        const fault = classify(err, { sessionSent });
        // A new session next time (now, for a forgotten one) unless the server merely answered slowly.
        if (fault.sessionLost || fault.unreachable || !sessionSent) await this.#drop();
        if (fault.sessionLost && attempt === 1 && performance.now() - started < timeoutMs) continue;
        return { ok: false, reason: fault.message };
      }
    }
  }

  async #connect(timeoutMs: number): Promise<Client> {
    const client = newClient();
    // A copy: the SDK keeps the URL it is given, and moveTo changes ours.
    const transport = this.#transport(new URL(this.#target.url));
    try {
      await client.connect(transport, { timeout: timeoutMs });
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    this.serverName ??= client.getServerVersion()?.name;
    return client;
  }

  /** The port probed now. */
  get port(): number {
    return portOf(this.#target.url);
  }

  /** The same URL (path, query, credentials) on another port. */
  onPort(port: number): URL {
    const url = new URL(this.#target.url);
    url.port = String(port);
    return url;
  }

  /** Which MCP server answers on `port` (its serverInfo.name), or undefined when none does in time. */
  async identify(port: number, timeoutMs: number): Promise<string | undefined> {
    const client = newClient();
    const transport = this.#transport(this.onPort(port));
    try {
      await client.connect(transport, { timeout: timeoutMs });
      return client.getServerVersion()?.name;
    } catch {
      return undefined;
    } finally {
      await transport.terminateSession().catch(() => undefined);
      await client.close().catch(() => undefined);
    }
  }

  /** Probe `port` from now on (a new session there). */
  async moveTo(port: number): Promise<void> {
    this.#target.url.port = String(port);
    await this.#drop();
  }

  #transport(url: URL): StreamableHTTPClientTransport {
    return new StreamableHTTPClientTransport(url, {
      fetch: guardedFetch({ agent: this.#agent, maxResponseBytes: MAX_PROBE_RESPONSE_BYTES, onTooLarge: () => undefined }),
      requestInit: { headers: this.#target.headers },
    });
  }

  async #drop(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    await client?.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    const transport = this.#client?.transport as StreamableHTTPClientTransport | undefined;
    // Ending the session politely is best effort, and never holds up a stop.
    if (transport) await within(500, transport.terminateSession());
    await this.#drop();
    await this.#agent.close().catch(() => undefined);
  }
}

function newClient(): Client {
  const client = new Client({ name: "toolbus-health-prober", version: "0.1.0" }, { capabilities: {} });
  // Transport errors outside a request (its event stream) are the next probe's to find.
  client.onerror = () => undefined;
  return client;
}
