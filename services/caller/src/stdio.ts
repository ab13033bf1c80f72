import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { McpStdioBackendConfig } from "@toolbus/config";
import type { Logger } from "@toolbus/runtime";
import { ClientEndpoint, type EndpointEvents } from "./endpoint.js";
import { ChildProcessTransport } from "./stdio-transport.js";

/** Children alive in this process, so an abnormal exit can still take them down. */
const liveChildren = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // On a graceful stop close() has already ended them; this covers a crash of the caller itself.
  // (A SIGKILLed caller cannot run this: its children see stdin close and exit on their own.)
  process.on("exit", () => {
    for (const pid of liveChildren) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });
}

/**
 * One child process of a stdio backend's pool. The child is initialized exactly once; when it exits
 * a new child is spawned with backoff while calls go to the pool's other live members.
 */
export class StdioEndpoint extends ClientEndpoint {
  #pid: number | null = null;

  constructor(
    id: string,
    private readonly config: McpStdioBackendConfig,
    log: Logger,
    events: EndpointEvents,
  ) {
    super(id, log, config.connectTimeoutMs, events);
    installExitHook();
  }

  /** The current child's pid (for tests and logs). */
  get pid(): number | null {
    return this.#pid;
  }

  protected createTransport(): Transport {
    const transport = new ChildProcessTransport({
      command: this.config.command,
      args: this.config.args,
      env: this.config.env,
      cwd: this.config.cwd,
      onStderr: (line) => this.log.debug({ endpoint: this.id, stderr: line }, "backend stderr"),
    });
    transport.onclose = () => {
      if (this.#pid !== null) liveChildren.delete(this.#pid);
    };
    return transport;
  }

  protected override afterConnect(transport: Transport): void {
    this.#pid = (transport as ChildProcessTransport).pid ?? null;
    if (this.#pid !== null) liveChildren.add(this.#pid);
  }

  override async close(): Promise<void> {
    await super.close();
    if (this.#pid !== null) liveChildren.delete(this.#pid);
  }
}
