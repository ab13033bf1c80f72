export {
  classify,
  clip,
  faultReply,
  abortReason,
  CallAbortedError,
  EndpointDownError,
  ResponseTooLargeError,
  SessionRefusedError,
  ToolbusRpcCode,
  TOOLBUS_MARK,
  MAX_BACKEND_TEXT,
} from "./faults.js";
export type { AbortKind, Fault, FaultContext, TimeoutContext } from "./faults.js";
export { guardedFetch, idStripper } from "./http-fetch.js";
export type { GuardedFetchOptions } from "./http-fetch.js";
export { httpTarget } from "./target.js";
