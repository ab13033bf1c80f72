export {
  classify,
  clip,
  faultReply,
  abortReason,
  CallAbortedError,
  EndpointDownError,
  SessionRefusedError,
  malformedAnswer,
  tooLargeAnswer,
} from "./faults.js";
export type { AbortKind, Fault, FaultContext, TimeoutContext } from "./faults.js";
export { guardedFetch } from "./http-fetch.js";
export type { GuardedFetchOptions } from "./http-fetch.js";
export { httpTarget, portOf, within } from "./target.js";
export { LeanHttpTransport, isJsonRpcMessage } from "./lean-transport.js";
export type { LeanHttpTransportOptions } from "./lean-transport.js";
export { readPrefix as readBodyPrefix, discard as discardBody } from "./undici-body.js";
