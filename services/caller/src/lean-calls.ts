import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  CallToolResultSchema,
  ErrorCode as McpErrorCode,
  McpError,
  type CallToolResult as McpCallToolResult,
  type JSONRPCMessage,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import type { ToolProgress } from "@toolbus/protocol";

/** What a tools/call needs: the timer (restarted by progress, never past `maxTotalMs`) and the call's signal. */
export interface LeanCallOptions {
  timeoutMs: number;
  maxTotalMs: number;
  signal: AbortSignal;
  /** Each progress notification (progress, total, message), for a client that asked for them. */
  onProgress?: (progress: ToolProgress) => void;
}

/** The relayable part of a progress notification's params (the token is the client's own). */
export function progressOf(p: { progress?: unknown; total?: unknown; message?: unknown }): ToolProgress {
  return {
    progress: typeof p.progress === "number" ? p.progress : 0,
    ...(typeof p.total === "number" ? { total: p.total } : {}),
    ...(typeof p.message === "string" ? { message: p.message } : {}),
  };
}

interface Pending {
  resolve(result: McpCallToolResult): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
  started: number;
  options: LeanCallOptions;
  onAbort: () => void;
}

/**
 * Ids of our own requests: far above the SDK's (0, 1, 2, ... on the same connection), so the two
 * never meet. A number, not a string: some servers mishandle string ids.
 */
const FIRST_ID = 1_000_000_000;

/**
 * tools/call on an MCP connection without the SDK's request machinery, which costs about 25 µs of
 * CPU per call (a zod type guard per message, closures, a Map per concern): more than half of what a
 * call through the caller costs in all. Everything else on the connection (initialize, tools/list,
 * ping, notifications, requests from the server) stays with the SDK's Client: this takes only the
 * responses and progress notifications of its own requests off the transport before the SDK sees them.
 *
 * It keeps the SDK's contract, which the caller's fault taxonomy reads: a timeout is McpError
 * RequestTimeout (and notifications/cancelled to the server), an abort rejects with the signal's
 * reason (and notifications/cancelled), a JSON-RPC error is McpError(code, message, data), a result
 * is parsed with the SDK's CallToolResultSchema (a ZodError if it is not one), and a closed
 * connection rejects what is out with McpError ConnectionClosed. Tools whose result the SDK checks
 * against an output schema, or that need tasks, go through the SDK (`sdkOnly`).
 */
export class LeanCalls {
  readonly #pending = new Map<number, Pending>();
  #nextId = FIRST_ID;
  #sdkOnly: ReadonlySet<string> = new Set();

  /** Attach to `transport` after the SDK's Client connected on it (it wraps the handlers the Client set). */
  constructor(private readonly transport: Transport) {
    const sdkMessage = transport.onmessage;
    const sdkClose = transport.onclose;
    transport.onmessage = (message, extra) => {
      if (!this.#take(message)) sdkMessage?.(message, extra);
    };
    transport.onclose = () => {
      this.#closeAll();
      sdkClose?.();
    };
  }

  /** Learn from a tools/list which tools must go through the SDK. */
  learn(tools: readonly Tool[]): void {
    this.#sdkOnly = new Set(tools.filter((t) => t.outputSchema !== undefined || t.execution?.taskSupport === "required").map((t) => t.name));
  }

  /** This tool's results are the SDK's to check: call it through the Client. */
  sdkOnly(name: string): boolean {
    return this.#sdkOnly.has(name);
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  call(name: string, args: Record<string, unknown>, options: LeanCallOptions): Promise<McpCallToolResult> {
    const { signal } = options;
    if (signal.aborted) return Promise.reject(signal.reason);
    const id = this.#nextId++;
    return new Promise<McpCallToolResult>((resolve, reject) => {
      const pending: Pending = {
        resolve,
        reject,
        // Set just below, once the closures exist.
        timer: undefined as unknown as NodeJS.Timeout,
        started: Date.now(),
        options,
        onAbort: () => this.#cancel(id, signal.reason),
      };
      pending.timer = setTimeout(() => this.#timedOut(id), options.timeoutMs);
      signal.addEventListener("abort", pending.onAbort, { once: true });
      this.#pending.set(id, pending);
      // Asking for progress (a token) is what makes a working backend's progress restart the timer.
      const request: JSONRPCMessage = { jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args, _meta: { progressToken: id } } };
      this.transport.send(request).catch((err: unknown) => {
        if (this.#settle(id)) reject(err);
      });
    });
  }

  /** Forget request `id`: its timer, its abort listener. False if it was settled already. */
  #settle(id: number): Pending | undefined {
    const pending = this.#pending.get(id);
    if (!pending) return undefined;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    pending.options.signal.removeEventListener("abort", pending.onAbort);
    return pending;
  }

  #timedOut(id: number): void {
    const timeout = this.#pending.get(id)?.options.timeoutMs;
    this.#cancel(id, new McpError(McpErrorCode.RequestTimeout, "Request timed out", { timeout }));
  }

  /** Give up on request `id` with `reason`, and tell the server so it can stop working on it. */
  #cancel(id: number, reason: unknown): void {
    const pending = this.#settle(id);
    if (!pending) return;
    this.transport
      .send({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: String(reason) } })
      // The connection is going away: there is nobody left to tell.
      .catch(() => undefined);
    pending.reject(reason instanceof McpError ? reason : new McpError(McpErrorCode.RequestTimeout, String(reason)));
  }

  /** A message for one of our requests: handled here (true), else it is the SDK's. */
  #take(message: JSONRPCMessage): boolean {
    const m = message as {
      id?: unknown;
      method?: unknown;
      params?: { progressToken?: unknown; progress?: unknown; total?: unknown; message?: unknown };
      result?: unknown;
      error?: unknown;
    };
    if (m.method === undefined) {
      if (typeof m.id !== "number" || !this.#pending.has(m.id)) return false;
      this.#answer(m.id, m);
      return true;
    }
    if (m.method === "notifications/progress" && typeof m.params?.progressToken === "number" && this.#pending.has(m.params.progressToken)) {
      this.#progress(m.params.progressToken, m.params);
      return true;
    }
    return false;
  }

  #answer(id: number, m: { result?: unknown; error?: unknown }): void {
    const pending = this.#settle(id)!;
    if ("result" in m) {
      const parsed = CallToolResultSchema.safeParse(m.result);
      if (parsed.success) pending.resolve(parsed.data);
      else pending.reject(parsed.error);
      return;
    }
    const error = m.error as { code?: unknown; message?: unknown; data?: unknown } | undefined;
    if (error && typeof error.code === "number" && Number.isInteger(error.code)) {
      pending.reject(new McpError(error.code, typeof error.message === "string" ? error.message : "", error.data));
    } else {
      // Neither a result nor a JSON-RPC error: the backend does not speak JSON-RPC properly.
      pending.reject(
        new McpError(McpErrorCode.InternalError, `the backend answered with neither a result nor a JSON-RPC error: ${JSON.stringify(m).slice(0, 200)}`),
      );
    }
  }

  /** A working backend is not hung: restart its timer, but never past the request's total. */
  #progress(id: number, params: { progress?: unknown; total?: unknown; message?: unknown }): void {
    const pending = this.#pending.get(id)!;
    const { timeoutMs, maxTotalMs, onProgress } = pending.options;
    const elapsed = Date.now() - pending.started;
    if (elapsed >= maxTotalMs) {
      this.#cancel(id, new McpError(McpErrorCode.RequestTimeout, "Maximum total timeout exceeded", { maxTotalTimeout: maxTotalMs, totalElapsed: elapsed }));
      return;
    }
    pending.timer.refresh();
    // refresh() restarts the same duration; never past the total.
    if (timeoutMs > maxTotalMs - elapsed) {
      clearTimeout(pending.timer);
      pending.timer = setTimeout(() => this.#timedOut(id), maxTotalMs - elapsed);
    }
    if (onProgress) onProgress(progressOf(params));
  }

  #closeAll(): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id)!.reject(new McpError(McpErrorCode.ConnectionClosed, "Connection closed"));
  }
}
