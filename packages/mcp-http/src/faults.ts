import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode as McpErrorCode, McpError, type JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { randomUUID } from "node:crypto";
import { ErrorCode, errorReply, isRetryableCode, type ErrorReply } from "@toolbus/protocol";

/**
 * The caller's fault taxonomy: the one place that decides what a failed backend request means. The
 * policies (breaker, retry), the HTTP endpoint (session loss, liveness) and the reply all ask here,
 * so a status code cannot mean one thing to the breaker and another to the retry loop.
 */

/** What the caller knew when the request failed. */
export interface FaultContext {
  /** The request carried an MCP session id: a 404 (or a 4xx naming the session) means the server forgot it. */
  sessionSent: boolean;
  /** The call's timer and what set it, for the message of a timeout. */
  timeout?: TimeoutContext;
}

/** Why the call's timer was what it was: the request's budget, or the backend's (adaptive) timeout. */
export interface TimeoutContext {
  timeoutMs: number;
  limitedBy: "budget" | "adaptive";
}

export interface Fault {
  /** The wire code the client gets. */
  code: ErrorCode;
  /** The backend, or the way to it, is failing: counts toward the endpoint's breaker. */
  fault: boolean;
  /** The request cannot have run on the backend, so sending it again cannot do harm. */
  neverReached: boolean;
  /** Not even a connection was made: the endpoint is down (marked so until it reconnects). */
  unreachable: boolean;
  /** The server forgot our MCP session: start a new one and send the request once more. */
  sessionLost: boolean;
  /** The same request, sent again later, may succeed (the wire flag). */
  retryable: boolean;
  message: string;
  details?: Record<string, unknown>;
}

/** Error text from a backend is cut to this many characters in replies and logs. */
export const MAX_BACKEND_TEXT = 300;

/** Cut `text` for a reply or a log line: a backend's error body can be megabytes. */
export function clip(text: string, max = MAX_BACKEND_TEXT): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}

/** JSON-RPC codes toolbus uses for what it did itself to a request (server-error range, -32000 to -32099). */
export const ToolbusRpcCode = {
  /** The backend's response was larger than toolbus accepts (`data.sizeBytes`, `data.limitBytes`). */
  responseTooLarge: -32090,
  /** Toolbus aborted the call: a client's cancel, or a stop out of grace (`data.abort`). */
  aborted: -32091,
} as const;

/** Why toolbus aborted a call; carried as the abort reason so the outcome says so. */
export type AbortKind = "client" | "stop" | "deadline";

/**
 * Marks the JSON-RPC errors toolbus makes up itself (an oversized answer), so a backend that happens
 * to answer with the same code is not taken for them.
 */
export const TOOLBUS_MARK = randomUUID();

/** A call toolbus aborted: the MCP SDK rejects the request with the abort reason itself. */
export class CallAbortedError extends McpError {
  override name = "CallAbortedError";
  constructor(
    readonly kind: AbortKind,
    message: string,
  ) {
    super(kind === "deadline" ? McpErrorCode.RequestTimeout : ToolbusRpcCode.aborted, message, { abort: kind });
  }
}

/**
 * The reason to abort a call with. The MCP SDK rejects the request with the reason when it is an
 * McpError (and sends notifications/cancelled to the backend), so the kind survives the trip.
 */
export function abortReason(kind: AbortKind, message: string): CallAbortedError {
  return new CallAbortedError(kind, message);
}

/** The same session failed twice: a fresh session was refused too. The tool never ran. */
export class SessionRefusedError extends Error {
  override name = "SessionRefusedError";
  constructor(
    readonly endpoint: string,
    readonly status: number,
    detail: string,
  ) {
    super(`${endpoint} refused a fresh MCP session too (HTTP ${status}): ${clip(detail)}`);
  }
}

/** A backend's response passed the size cap (`maxResponseBytes`); the rest of it was never read. */
export class ResponseTooLargeError extends Error {
  override name = "ResponseTooLargeError";
  constructor(
    readonly seenBytes: number,
    readonly limitBytes: number,
  ) {
    super(`the backend's response is over the limit of ${limitBytes} bytes (${seenBytes} bytes seen)`);
  }
}

/** The endpoint has no live connection: nothing was sent. */
export class EndpointDownError extends Error {
  override name = "EndpointDownError";
  constructor(readonly endpoint: string) {
    super(`endpoint ${endpoint} is not connected`);
  }
}

/** undici's codes for failures before a request was sent: it cannot have reached the server. */
const CONNECT_PHASE = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "UND_ERR_CONNECT_TIMEOUT"]);

/** JSON-RPC errors that say the request was wrong, not that the backend is failing. */
const CALLER_MISTAKES: ReadonlySet<number> = new Set([McpErrorCode.InvalidParams, McpErrorCode.MethodNotFound, McpErrorCode.InvalidRequest]);

/** A body that says the session is gone, in the words servers use. */
const LOST_SESSION_TEXT =
  /(no valid|invalid|unknown|expired|missing|bad) session|session( id)? (not found|is invalid|invalid|expired|unknown|terminated|does not exist)/i;

/**
 * Does a 4xx answer to a request that carried a session id say the session is gone? The spec says
 * 404; the reference server says 400 `{"code":-32000,"message":"Bad Request: No valid session ID
 * provided"}`; others say 401 or 410 with a body naming the lost session, or JSON-RPC -32001 "Session
 * not found". Not 405/406/409/413/415, nor a bare -32000: the reference server uses that code for
 * nearly every 4xx it sends (method not allowed, a second event stream, a body too large, ...).
 */
function namesLostSession(status: number, body: string): boolean {
  if (status === 404) return true;
  if (status !== 400 && status !== 401 && status !== 410) return false;
  return LOST_SESSION_TEXT.test(body) || /"code"\s*:\s*-32001\b/.test(body);
}

type Decision = Omit<Fault, "message" | "details" | "retryable"> & { retryable?: boolean };

const decide = (code: ErrorCode, d: Partial<Omit<Decision, "code">>): Decision => ({
  code,
  fault: d.fault ?? false,
  neverReached: d.neverReached ?? false,
  unreachable: d.unreachable ?? false,
  sessionLost: d.sessionLost ?? false,
  ...(d.retryable !== undefined ? { retryable: d.retryable } : {}),
});

/**
 * The network error of a failed request, if it is one: the undici error under a fetch TypeError
 * ("fetch failed", "terminated"), or one undici's dispatcher API throws bare (the lean transport).
 */
function networkCause(err: unknown): { code?: string; message?: string } | undefined {
  if (err instanceof TypeError && /fetch failed|terminated/.test(err.message))
    return ((err as { cause?: { code?: string; message?: string } }).cause ?? {}) as { code?: string; message?: string };
  const code = (err as { code?: unknown } | undefined)?.code;
  if (err instanceof Error && typeof code === "string" && (code.startsWith("UND_ERR") || /^E[A-Z]+$/.test(code))) return { code, message: err.message };
  return undefined;
}

/** Classify a failed backend request. Never throws; an error it does not know is INTERNAL. */
export function classify(err: unknown, ctx: FaultContext): Fault {
  const { decision, message, details } = decideFor(err, ctx);
  return {
    ...decision,
    retryable: decision.retryable ?? isRetryableCode(decision.code),
    message,
    ...(details ? { details } : {}),
  };
}

function decideFor(err: unknown, ctx: FaultContext): { decision: Decision; message: string; details?: Record<string, unknown> } {
  if (err instanceof EndpointDownError) {
    return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true, neverReached: true }), message: "the endpoint is not connected" };
  }
  if (err instanceof SessionRefusedError) {
    // A server that refuses even a brand-new session is failing; the tool never ran.
    return {
      decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true, neverReached: true }),
      message: err.message,
      details: { httpStatus: err.status },
    };
  }
  if (err instanceof ResponseTooLargeError) {
    return {
      decision: decide(ErrorCode.PAYLOAD_TOO_LARGE, {}),
      message: err.message,
      details: { sizeBytes: err.seenBytes, limitBytes: err.limitBytes },
    };
  }
  if (err instanceof McpError) {
    const data = err.data as { sizeBytes?: number; limitBytes?: number; mark?: string } | undefined;
    const aborted = err instanceof CallAbortedError ? err.kind : undefined;
    if (aborted === "client" || aborted === "stop") {
      return { decision: decide(ErrorCode.CANCELLED, {}), message: err.message.replace(/^MCP error -?\d+: /, "") };
    }
    if (err.code === McpErrorCode.RequestTimeout) {
      const t = ctx.timeout;
      const why = aborted === "deadline" || t?.limitedBy !== "adaptive" ? "the request's deadline" : "the adaptive timeout for this tool";
      return {
        decision: decide(ErrorCode.DEADLINE_EXCEEDED, { fault: true }),
        message: `backend did not answer ${t ? `within ${t.timeoutMs} ms ` : ""}(${why}); the call was cancelled at the backend`,
        ...(t ? { details: { timeoutMs: t.timeoutMs, limitedBy: aborted === "deadline" ? "budget" : t.limitedBy } } : {}),
      };
    }
    if (err.code === ToolbusRpcCode.responseTooLarge && data?.mark === TOOLBUS_MARK) {
      // The tool ran and answered; its answer is too big to carry. Not the backend failing.
      return {
        decision: decide(ErrorCode.PAYLOAD_TOO_LARGE, {}),
        message: err.message.replace(/^MCP error -?\d+: /, ""),
        details: { sizeBytes: data?.sizeBytes, limitBytes: data?.limitBytes },
      };
    }
    if (err.code === McpErrorCode.ConnectionClosed) {
      return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true }), message: "backend connection closed during the call" };
    }
    return {
      decision: decide(ErrorCode.BACKEND_ERROR, { fault: !CALLER_MISTAKES.has(err.code) }),
      message: `backend answered with JSON-RPC error ${err.code}: ${clip(err.message.replace(/^MCP error -?\d+: /, ""))}`,
      details: { jsonRpcCode: err.code, ...(err.data !== undefined ? { data: clipData(err.data) } : {}) },
    };
  }
  if (err instanceof StreamableHTTPError) {
    const status = err.code ?? -1;
    const body = err.message;
    const details = { httpStatus: status };
    const text = `backend HTTP error ${status}: ${clip(body)}`;
    if (ctx.sessionSent && namesLostSession(status, body)) {
      // The server forgot the session before reading the request: the call did not run.
      return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { neverReached: true, sessionLost: true }), message: `MCP session lost: ${text}`, details };
    }
    if (status === 429) return { decision: decide(ErrorCode.RATE_LIMITED, { fault: true, neverReached: true }), message: text, details };
    if (status === 408 || status === 404) {
      // 408: the server gave up waiting for the request; 404 without a session: nothing serves that URL.
      return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true, neverReached: true }), message: text, details };
    }
    if (status >= 500) return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true }), message: text, details };
    if (status >= 400) {
      // 400 without a session, 401, 403, 405, 413, 415: the request (or the config's headers) is wrong.
      return { decision: decide(ErrorCode.BACKEND_ERROR, { retryable: false }), message: text, details };
    }
    // -1 (unexpected content type) or a 1xx/3xx: the server does not speak streamable HTTP properly.
    return { decision: decide(ErrorCode.BACKEND_ERROR, { fault: true }), message: text, details };
  }
  const cause = networkCause(err);
  if (cause) {
    const what = cause.code ?? cause.message ?? "unknown";
    if (CONNECT_PHASE.has(cause.code ?? "")) {
      return {
        decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true, neverReached: true, unreachable: true }),
        message: `cannot connect to the backend: ${what}`,
      };
    }
    // A reset or a cut stream may come after the server ran the call: not "never reached".
    return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true }), message: `connection to the backend failed during the call: ${what}` };
  }
  if (err instanceof Error && err.name === "ZodError") {
    return {
      decision: decide(ErrorCode.BACKEND_ERROR, { fault: true }),
      message: `backend sent a result that is not a valid MCP CallToolResult: ${clip(err.message)}`,
    };
  }
  if (err instanceof Error && err.message === "Not connected") {
    // The SDK's answer when the connection closed between our check and the send.
    return { decision: decide(ErrorCode.BACKEND_UNAVAILABLE, { fault: true, neverReached: true }), message: "the endpoint is not connected" };
  }
  return {
    decision: decide(ErrorCode.INTERNAL, { fault: true }),
    message: `unexpected failure: ${clip(err instanceof Error ? err.message : String(err))}`,
  };
}

/** A backend's error data goes on the wire only while it is small. */
function clipData(data: unknown): unknown {
  const json = JSON.stringify(data);
  return json === undefined || json.length <= MAX_BACKEND_TEXT ? data : clip(json);
}

/** The reply for a fault, naming the endpoint (an id without secrets) it happened on. */
export function faultReply(fault: Fault, endpoint: string, retryAfterMs?: number): ErrorReply {
  return errorReply(fault.code, `${fault.message} (${endpoint})`, {
    retryable: fault.retryable,
    retryAfterMs,
    details: { endpoint, ...fault.details },
  });
}

/**
 * The answer toolbus makes up for a request whose real answer was too large to read: a JSON-RPC error
 * of its own (marked), handed to the MCP client as if the server had sent it, so the call ends now.
 */
export function tooLargeAnswer(id: string | number, bytes: number, limit: number): JSONRPCMessage {
  return {
    jsonrpc: "2.0",
    id,
    error: {
      code: ToolbusRpcCode.responseTooLarge,
      message: `the backend's result is over the limit of ${limit} bytes (${bytes} bytes seen; discarded)`,
      data: { sizeBytes: bytes, limitBytes: limit, mark: TOOLBUS_MARK },
    },
  };
}

/**
 * A line or event that names one of the client's requests (an id, no method) but is neither a result
 * nor an error: the backend does not speak JSON-RPC properly. Made into a JSON-RPC error for that id,
 * so the request ends now with a clear message instead of waiting for its timeout.
 */
export function malformedAnswer(value: unknown): JSONRPCMessage | undefined {
  const m = value as { id?: unknown; method?: unknown } | null;
  if (m === null || typeof m !== "object" || m.method !== undefined || (typeof m.id !== "number" && typeof m.id !== "string")) return undefined;
  return {
    jsonrpc: "2.0",
    id: m.id,
    error: {
      code: McpErrorCode.InternalError,
      message: `the backend answered with neither a result nor a JSON-RPC error: ${clip(JSON.stringify(value), 200)}`,
    },
  };
}
