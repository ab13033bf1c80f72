import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode as Rpc, McpError } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it } from "vitest";
import {
  EndpointDownError,
  ResponseTooLargeError,
  SessionRefusedError,
  TOOLBUS_MARK,
  ToolbusRpcCode,
  abortReason,
  classify,
  clip,
  faultReply,
  type Fault,
} from "./faults.js";

/** undici's shape: TypeError("fetch failed") with the socket error as its cause. */
const network = (code: string, message = "fetch failed"): TypeError =>
  Object.assign(new TypeError(message), { cause: Object.assign(new Error(code), { code }) });
const http = (status: number, body: string): StreamableHTTPError => new StreamableHTTPError(status, `Error POSTing to endpoint: ${body}`);
const REFERENCE_400 = '{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}';
const SPEC_404 = '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}';

type Row = [what: string, err: unknown, sessionSent: boolean, expected: Pick<Fault, "code" | "fault" | "neverReached" | "sessionLost" | "retryable">];

const row = (code: Fault["code"], fault: boolean, neverReached: boolean, sessionLost: boolean, retryable: boolean) => ({
  code,
  fault,
  neverReached,
  sessionLost,
  retryable,
});

describe("the fault taxonomy", () => {
  it.each<Row>([
    // Session loss: whatever the server says, as long as the request carried a session.
    ["404 with a session (the spec's answer)", http(404, SPEC_404), true, row("BACKEND_UNAVAILABLE", false, true, true, true)],
    ["400 with a session, body naming it (the reference server)", http(400, REFERENCE_400), true, row("BACKEND_UNAVAILABLE", false, true, true, true)],
    ["400 with a session, JSON-RPC -32001", http(400, '{"error":{"code":-32001,"message":"gone"}}'), true, row("BACKEND_UNAVAILABLE", false, true, true, true)],
    ["410 with a session, body naming it", http(410, "session expired"), true, row("BACKEND_UNAVAILABLE", false, true, true, true)],
    ["401 with a session, body naming it", http(401, "unknown session"), true, row("BACKEND_UNAVAILABLE", false, true, true, true)],
    ["400 with a session, body about something else", http(400, "invalid JSON"), true, row("BACKEND_ERROR", false, false, false, false)],
    // The reference server answers nearly every 4xx with JSON-RPC -32000: none of these is session loss.
    ...(
      [
        [400, "Bad Request: Unsupported protocol version"],
        [405, "Method not allowed."],
        [406, "Not Acceptable: Client must accept both application/json and text/event-stream"],
        [409, "Conflict: Only one SSE stream is allowed per session"],
        [413, "Payload too large"],
        [415, "Unsupported Media Type: Content-Type must be application/json"],
      ] as const
    ).map(([status, message]): Row => [
      `${status} with a session, JSON-RPC -32000 "${message}"`,
      http(status, JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message }, id: null })),
      true,
      row("BACKEND_ERROR", false, false, false, false),
    ]),
    // The same answers without a session id are not session loss.
    ["400 without a session", http(400, REFERENCE_400), false, row("BACKEND_ERROR", false, false, false, false)],
    ["404 without a session (nothing at that URL)", http(404, "Not Found"), false, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["401 without a session (bad credentials)", http(401, "unauthorized"), false, row("BACKEND_ERROR", false, false, false, false)],
    ["408", http(408, "request timeout"), true, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["429", http(429, "slow down"), true, row("RATE_LIMITED", true, true, false, true)],
    ["500", http(500, "boom"), true, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    ["503", http(503, "unavailable"), false, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    [
      "an unexpected content type (-1)",
      new StreamableHTTPError(-1, "Unexpected content type: text/html"),
      true,
      row("BACKEND_ERROR", true, false, false, false),
    ],
    // The network.
    ["connection refused", network("ECONNREFUSED"), true, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["DNS failure", network("ENOTFOUND"), false, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["connect timeout", network("UND_ERR_CONNECT_TIMEOUT"), false, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["connection reset (may have run)", network("ECONNRESET"), true, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    ["socket closed mid-response", network("UND_ERR_SOCKET", "terminated"), true, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    ["an endpoint that is down", new EndpointDownError("e#0"), false, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["a fresh session refused too", new SessionRefusedError("e#0", 400, "bad"), true, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    // JSON-RPC.
    ["a timeout", new McpError(Rpc.RequestTimeout, "Request timed out"), false, row("DEADLINE_EXCEEDED", true, false, false, true)],
    ["the hard deadline", abortReason("deadline", "deadline"), false, row("DEADLINE_EXCEEDED", true, false, false, true)],
    ["a client's cancel", abortReason("client", "cancelled by the client"), false, row("CANCELLED", false, false, false, false)],
    ["a stop out of grace", abortReason("stop", "stopping"), false, row("CANCELLED", false, false, false, false)],
    ["a lost stdio connection", new McpError(Rpc.ConnectionClosed, "Connection closed"), false, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    ["JSON-RPC internal error", new McpError(Rpc.InternalError, "i"), false, row("BACKEND_ERROR", true, false, false, false)],
    ["JSON-RPC parse error (garbage)", new McpError(Rpc.ParseError, "p"), false, row("BACKEND_ERROR", true, false, false, false)],
    ["JSON-RPC invalid params (the caller's mistake)", new McpError(Rpc.InvalidParams, "bad"), false, row("BACKEND_ERROR", false, false, false, false)],
    ["JSON-RPC method not found", new McpError(Rpc.MethodNotFound, "m"), false, row("BACKEND_ERROR", false, false, false, false)],
    // -32000 is also the SDK's own "connection closed": never session loss outside an HTTP 4xx.
    ["JSON-RPC -32000 is not session loss", new McpError(-32000, "x"), true, row("BACKEND_UNAVAILABLE", true, false, false, true)],
    [
      "a response over the size cap",
      new McpError(ToolbusRpcCode.responseTooLarge, "too large", { sizeBytes: 2e7, limitBytes: 1e6, mark: TOOLBUS_MARK }),
      true,
      row("PAYLOAD_TOO_LARGE", false, false, false, false),
    ],
    ["a response body over the size cap", new ResponseTooLargeError(2e7, 1e6), true, row("PAYLOAD_TOO_LARGE", false, false, false, false)],
    [
      "a backend's own JSON-RPC error with toolbus's size code (not marked) is the backend's error",
      new McpError(ToolbusRpcCode.responseTooLarge, "mine", { sizeBytes: 1 }),
      false,
      row("BACKEND_ERROR", true, false, false, false),
    ],
    [
      "a backend's own JSON-RPC error claiming an abort is not a cancel",
      new McpError(ToolbusRpcCode.aborted, "x", { abort: "client" }),
      false,
      row("BACKEND_ERROR", true, false, false, false),
    ],
    // Everything else.
    ["a result that is not a CallToolResult", Object.assign(new Error("bad"), { name: "ZodError" }), false, row("BACKEND_ERROR", true, false, false, false)],
    ["the SDK's Not connected", new Error("Not connected"), false, row("BACKEND_UNAVAILABLE", true, true, false, true)],
    ["something unknown", new RangeError("what"), false, row("INTERNAL", true, false, false, false)],
  ])("%s", (_what, err, sessionSent, expected) => {
    const fault = classify(err, { sessionSent });
    expect({ code: fault.code, fault: fault.fault, neverReached: fault.neverReached, sessionLost: fault.sessionLost, retryable: fault.retryable }).toEqual(
      expected,
    );
  });

  it("only a connect-phase failure marks the endpoint unreachable", () => {
    expect(classify(network("ECONNREFUSED"), { sessionSent: true }).unreachable).toBe(true);
    expect(classify(network("ECONNRESET"), { sessionSent: true }).unreachable).toBe(false);
    expect(classify(http(503, "x"), { sessionSent: true }).unreachable).toBe(false);
  });

  it("says which timer cut a call", () => {
    const adaptive = classify(new McpError(Rpc.RequestTimeout, "t"), { sessionSent: false, timeout: { timeoutMs: 80, limitedBy: "adaptive" } });
    expect(adaptive.message).toMatch(/within 80 ms \(the adaptive timeout/);
    const deadline = classify(abortReason("deadline", "d"), { sessionSent: false, timeout: { timeoutMs: 80, limitedBy: "adaptive" } });
    expect(deadline.message).toMatch(/the request's deadline/);
    expect(deadline.details).toMatchObject({ limitedBy: "budget" });
  });

  it("cuts a backend's text to a few hundred characters in the reply", () => {
    const huge = "x".repeat(20 * 1024 * 1024);
    const reply = faultReply(classify(http(500, huge), { sessionSent: true }), "web#0");
    expect(reply.error.message.length).toBeLessThan(500);
    expect(reply.error.details).toEqual({ endpoint: "web#0", httpStatus: 500 });
    const rpc = faultReply(classify(new McpError(Rpc.InternalError, huge, { blob: huge }), { sessionSent: false }), "web#0");
    expect(JSON.stringify(rpc).length).toBeLessThan(1_000);
    expect(clip("short")).toBe("short");
  });
});
