import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it } from "vitest";
import { EndpointDownError } from "./endpoint.js";
import { isBackendFault, isSafeToRepeat } from "./policy.js";

describe("isBackendFault", () => {
  it.each([
    ["a timeout", new McpError(ErrorCode.RequestTimeout, "t"), true],
    ["a lost connection", new McpError(ErrorCode.ConnectionClosed, "c"), true],
    ["a JSON-RPC internal error", new McpError(ErrorCode.InternalError, "i"), true],
    ["a parse error (garbage)", new McpError(ErrorCode.ParseError, "p"), true],
    ["an endpoint that is down", new EndpointDownError("e"), true],
    ["HTTP 503", new StreamableHTTPError(503, "unavailable"), true],
    ["HTTP 429", new StreamableHTTPError(429, "slow down"), true],
    ["invalid params (the caller's mistake)", new McpError(ErrorCode.InvalidParams, "bad"), false],
    ["an unknown method", new McpError(ErrorCode.MethodNotFound, "m"), false],
    ["HTTP 400", new StreamableHTTPError(400, "bad request"), false],
    ["HTTP 401", new StreamableHTTPError(401, "unauthorized"), false],
  ])("%s → %s", (_what, err, fault) => expect(isBackendFault(err)).toBe(fault));
});

describe("isSafeToRepeat", () => {
  const tool = (annotations?: Record<string, boolean>) => ({ name: "t", inputSchema: { type: "object" as const }, ...(annotations ? { annotations } : {}) });
  it("follows the annotations, and config overrides them either way", () => {
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ idempotentHint: true }), undefined)).toBe(true);
    expect(isSafeToRepeat(tool({ destructiveHint: true }), undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), undefined)).toBe(false);
    expect(isSafeToRepeat(undefined, undefined)).toBe(false);
    expect(isSafeToRepeat(tool(), { idempotent: true })).toBe(true);
    expect(isSafeToRepeat(tool({ readOnlyHint: true }), { readOnly: false })).toBe(false);
  });
});
