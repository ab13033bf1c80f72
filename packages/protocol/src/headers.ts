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
  /**
   * Set by the router on a call it judged cacheable: the entry's key (see cacheKey). The cache worker
   * looks it up; the caller, when it also computes this key, stores the result under it.
   */
  CacheKey: "Toolbus-Cache-Key",
  /**
   * On a call the router hands to the cache: the client's reply subject. It travels as a header, not as
   * the message's reply, so a cache that has just died makes the server answer "no responders" to nobody
   * (the router's watchdog sends the call on) rather than to the client.
   */
  ReplyTo: "Toolbus-Reply-To",
  /** On a call the router hands to the cache: the router's number for it, acknowledged once the cache has answered or forwarded it. */
  CacheTicket: "Toolbus-Cache-Ticket",
  /**
   * On an LLM chat: the backends still to try, in order, comma-separated, when this one cannot answer
   * before the first chunk (set by the router from the fallback chain; each caller that falls back
   * removes itself and forwards the message to the next).
   */
  Fallbacks: "Toolbus-Fallbacks",
  /** On an LLM chat that fell back: the backends tried so far and why each gave up (JSON array of LlmTried). */
  Tried: "Toolbus-Tried",
  /** On an LLM chat a caller forwarded to a fallback: its user_message is in the chat log already. */
  ChatLogged: "Toolbus-Chat-Logged",
  /**
   * On a tool call: a subject where the caller publishes the backend's progress notifications
   * (ToolProgress), as they come. Without it the caller asks for progress only to keep its timer fair.
   */
  ProgressTo: "Toolbus-Progress-To",
} as const;
export type Headers = (typeof Headers)[keyof typeof Headers];
