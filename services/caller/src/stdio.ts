import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { McpStdioBackendConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { ClientEndpoint, type EndpointEvents } from "./endpoint.js";
import { ChildProcessTransport } from "./stdio-transport.js";

/**
 * One child process of a stdio backend's pool. The child is initialized exactly once; when it exits
 * a new child is spawned with backoff while calls go to the pool's other live members.
 */
export class StdioEndpoint extends ClientEndpoint {
  #pid: number | null = null;

  constructor(
    id: string,
    private readonly config: McpStdioBackendConfig,
    /** The longest message read from the child (about the NATS max payload: a larger result cannot be sent on). */
    private readonly maxResponseBytes: number,
    log: Logger,
    events: EndpointEvents,
  ) {
    super(id, log, config.connectTimeoutMs, events);
    this.leanCalls = config.calls === "lean";
  }

  /** The current child's pid (for tests and logs). */
  get pid(): number | null {
    return this.#pid;
  }

  protected createTransport(): Transport {
    return new ChildProcessTransport({
      command: this.config.command,
      args: this.config.args,
      env: this.config.env,
      cwd: this.config.cwd,
      onStderr: (line) => this.log.debug({ endpoint: this.id, stderr: line }, "backend stderr"),
      maxLineBytes: this.maxResponseBytes,
    });
  }

  protected override afterConnect(transport: Transport): void {
    this.#pid = (transport as ChildProcessTransport).pid ?? null;
  }
}
