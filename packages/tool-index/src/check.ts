import { ErrorCode, errorReply, type ErrorReply, type ToolCallRequest } from "@toolbus/protocol";
import type { ToolIndex } from "./tool-index.js";

/** How many known names an UNKNOWN_* error lists in its message (all are in details). */
const NAMES_IN_MESSAGE = 20;

function listNames(names: readonly string[]): string {
  const shown = names.slice(0, NAMES_IN_MESSAGE).join(", ");
  return names.length > NAMES_IN_MESSAGE ? `${shown}, … (${names.length} in all)` : shown || "none";
}

/** UNKNOWN_BACKEND naming the backends that are known. */
export function unknownBackend(backend: string, known: readonly string[]): ErrorReply {
  return errorReply(ErrorCode.UNKNOWN_BACKEND, `unknown backend "${backend}"; known backends: ${listNames(known)}`, { details: { backend, known } });
}

/**
 * Check a call against a backend's tools: the tool must exist and the arguments must match its input
 * schema (every violating field named). Returns the error reply, or undefined when the call may go on.
 */
export function checkToolCall(index: ToolIndex, request: ToolCallRequest): ErrorReply | undefined {
  if (!index.has(request.tool)) {
    const known = index.names;
    return errorReply(ErrorCode.UNKNOWN_TOOL, `backend "${request.backend}" has no tool "${request.tool}"; its tools: ${listNames(known)}`, {
      details: { backend: request.backend, tool: request.tool, known },
    });
  }
  const check = index.check(request.tool, request.arguments);
  if (!check.ok) {
    const summary = check.issues.map((i) => `${i.field} ${i.message}`).join("; ");
    return errorReply(ErrorCode.VALIDATION_FAILED, `arguments for ${request.backend}/${request.tool} are invalid: ${summary}`, {
      details: { validationErrors: check.issues },
    });
  }
  return undefined;
}
