import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode as McpErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, errorReply, type ErrorReply } from "@toolbus/protocol";
import { EndpointDownError } from "./endpoint.js";

/** Why the call's timer was what it was: the request's budget, or the backend's (adaptive) timeout. */
export interface TimeoutContext {
  timeoutMs: number;
  limitedBy: "budget" | "adaptive";
}

/**
 * Map a failed backend call to a wire error. Only faults of the backend or the path to it land here;
 * a tool that ran and reported `isError: true` is a result and never reaches this function.
 */
export function backendFailure(err: unknown, endpoint: string, timeout: TimeoutContext): ErrorReply {
  if (err instanceof EndpointDownError) {
    return errorReply(ErrorCode.BACKEND_UNAVAILABLE, `backend endpoint ${endpoint} is not connected`, { details: { endpoint } });
  }
  if (err instanceof McpError) {
    if (err.code === McpErrorCode.RequestTimeout) {
      const why = timeout.limitedBy === "budget" ? "the request's deadline" : "the adaptive timeout for this tool";
      return errorReply(ErrorCode.DEADLINE_EXCEEDED, `backend did not answer within ${timeout.timeoutMs} ms (${why}); the call was cancelled at the backend`, {
        details: { endpoint, timeoutMs: timeout.timeoutMs, limitedBy: timeout.limitedBy },
      });
    }
    if (err.code === McpErrorCode.ConnectionClosed) {
      return errorReply(ErrorCode.BACKEND_UNAVAILABLE, `backend connection closed during the call (${endpoint})`, { details: { endpoint } });
    }
    return errorReply(ErrorCode.BACKEND_ERROR, `backend answered with JSON-RPC error ${err.code}: ${err.message}`, {
      details: { endpoint, jsonRpcCode: err.code, ...(err.data !== undefined ? { data: err.data } : {}) },
    });
  }
  if (err instanceof StreamableHTTPError) {
    const status = err.code ?? -1;
    const code = status >= 500 || status === 404 || status === 429 ? ErrorCode.BACKEND_UNAVAILABLE : ErrorCode.BACKEND_ERROR;
    return errorReply(code, `backend HTTP error ${status}: ${err.message}`, { details: { endpoint, httpStatus: status } });
  }
  if (err instanceof TypeError && /fetch failed|terminated/.test(err.message)) {
    // undici: the connection failed or was cut during the call; the server may or may not have run it.
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return errorReply(ErrorCode.BACKEND_UNAVAILABLE, `connection to ${endpoint} failed during the call: ${cause?.code ?? cause?.message ?? err.message}`, {
      details: { endpoint },
    });
  }
  if (err instanceof Error && err.name === "ZodError") {
    return errorReply(ErrorCode.BACKEND_ERROR, `backend sent a result that is not a valid MCP CallToolResult: ${err.message.slice(0, 500)}`, {
      details: { endpoint },
    });
  }
  return errorReply(ErrorCode.INTERNAL, `unexpected failure calling ${endpoint}: ${err instanceof Error ? err.message : String(err)}`, {
    details: { endpoint },
  });
}
