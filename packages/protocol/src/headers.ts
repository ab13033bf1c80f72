/** Header names carried by every request. */
export const Headers = {
  /** Budget left, in ms, when the message was sent (relative, so clock skew does not matter). */
  TimeoutMs: "Toolbus-Timeout-Ms",
  /** Unique request id, kept through every hop and in every log line about the request. */
  RequestId: "Toolbus-Request-Id",
  /** W3C trace context, passed through untouched. */
  TraceParent: "traceparent",
  /** Set by the router on a forwarded call: the worker id that forwarded it. */
  ForwardedBy: "Toolbus-Forwarded-By",
} as const;
export type Headers = (typeof Headers)[keyof typeof Headers];
