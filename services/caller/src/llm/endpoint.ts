import { createParser } from "eventsource-parser";
import { Pool, type Dispatcher } from "undici";
import type { LlmDelta } from "@toolbus/protocol";
import { discardBody, readBodyPrefix } from "@toolbus/mcp-http";
import { ProviderProtocolError, type Completion, type Provider } from "./providers.js";

/** The provider answered an HTTP error: its status, what it said, and how long it asked us to wait. */
export class LlmHttpError extends Error {
  override name = "LlmHttpError";
  constructor(
    readonly status: number,
    message: string,
    /** From Retry-After, retry-after-ms or the x-ratelimit-reset-* headers; undefined when it said nothing. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
  }
}

export function isLlmHttpError(err: unknown): err is LlmHttpError {
  return err instanceof Error && err.name === "LlmHttpError";
}

/** Which of an attempt's clocks ran out. */
export type LlmTimeoutKind = "first-token" | "idle" | "total";

export class LlmTimeoutError extends Error {
  override name = "LlmTimeoutError";
  constructor(
    readonly kind: LlmTimeoutKind,
    readonly timeoutMs: number,
  ) {
    super(
      kind === "first-token"
        ? `no first token within ${timeoutMs} ms`
        : kind === "idle"
          ? `the stream sent nothing for ${timeoutMs} ms (idle timeout)`
          : `no complete answer within ${timeoutMs} ms`,
    );
  }
}

export function isLlmTimeoutError(err: unknown): err is LlmTimeoutError {
  return err instanceof Error && err.name === "LlmTimeoutError";
}

/** A whole (not streamed) answer larger than could ever be sent on: reading stopped there. */
export class LlmResponseTooLargeError extends Error {
  override name = "LlmResponseTooLargeError";
  constructor(readonly limitBytes: number) {
    super(`the answer is larger than ${limitBytes} bytes`);
  }
}

export function isLlmResponseTooLargeError(err: unknown): err is LlmResponseTooLargeError {
  return err instanceof Error && err.name === "LlmResponseTooLargeError";
}

export interface AttemptOptions {
  body: unknown;
  stream: boolean;
  model: string;
  /** The call's own signal (client cancel, deadline, stop): aborting it closes the upstream request. */
  signal: AbortSignal;
  /** Until the first chunk of a stream (or, not streamed, until the whole answer). */
  firstTokenMs: number;
  /** Between chunks of a stream. */
  idleMs: number;
  /** The whole attempt. */
  totalMs: number;
  /** Each chunk's deltas, as they arrive (streams only). */
  onDeltas?: (deltas: LlmDelta[]) => void;
}

const MAX_ERROR_BODY = 2048;

/**
 * One base URL of an LLM backend: an undici Pool of keep-alive connections, and how it is doing
 * (calls in flight, a cool-down a 429 or 503 asked for). Counts requests and connections opened, so
 * connection reuse can be measured.
 */
export class LlmEndpoint {
  readonly #pool: Pool;
  readonly #url: URL;
  readonly #maxResponseBytes: number;
  /** Private: they hold the API key. */
  readonly #headers: Record<string, string>;
  readonly #secret: string | undefined;
  #inFlight = 0;
  /** Epoch ms until which the provider asked not to be called (Retry-After). */
  cooldownUntil = 0;
  requests = 0;
  connectionsOpened = 0;

  constructor(
    readonly id: string,
    baseUrl: string,
    private readonly provider: Provider,
    headers: Record<string, string>,
    options: {
      connections: number;
      connectTimeoutMs: number;
      maxResponseBytes: number;
      /** The API key, if any: it is cut out of every error message (providers quote the key they refused). */
      secret?: string;
    },
  ) {
    this.#headers = headers;
    this.#secret = options.secret;
    this.#url = new URL(baseUrl + provider.path);
    this.#pool = new Pool(this.#url.origin, {
      connections: options.connections,
      // Our own clocks (first token, idle, total) abort the request; undici's would only race them.
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: { timeout: options.connectTimeoutMs },
      keepAliveTimeout: 30_000,
      // No maxResponseSize: it would cut long streams too; a whole answer is capped as it is read.
    });
    this.#maxResponseBytes = options.maxResponseBytes;
    this.#pool.on("connect", () => (this.connectionsOpened += 1));
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Ms the provider asked us to wait, still to run. */
  coolingMs(now = Date.now()): number {
    return Math.max(0, this.cooldownUntil - now);
  }

  /** Cool down for `ms` from now: the later of the current and the new end, never an earlier one. */
  coolDown(ms: number, now = Date.now()): void {
    this.cooldownUntil = Math.max(this.cooldownUntil, now + ms);
  }

  /** One request to the provider. Resolves with the whole answer; rejects with LlmHttpError, LlmTimeoutError, ProviderProtocolError or a network error. */
  async attempt(options: AttemptOptions): Promise<Completion> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(options.signal.reason);
    if (options.signal.aborted) throw options.signal.reason;
    options.signal.addEventListener("abort", onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const arm = (kind: LlmTimeoutKind, ms: number): void => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new LlmTimeoutError(kind, ms)), Math.max(1, ms));
    };
    const total = setTimeout(() => controller.abort(new LlmTimeoutError("total", options.totalMs)), Math.max(1, options.totalMs));
    // A whole answer has only the total clock; a stream must start within the first-token one.
    if (options.stream && options.firstTokenMs < options.totalMs) arm("first-token", options.firstTokenMs);
    this.#inFlight += 1;
    this.requests += 1;
    let response: Dispatcher.ResponseData | undefined;
    try {
      response = await this.#pool.request({
        path: this.#url.pathname + this.#url.search,
        method: "POST",
        headers: this.#headers,
        body: JSON.stringify(options.body),
        signal: controller.signal,
      });
      const type = String(response.headers["content-type"] ?? "");
      if (response.statusCode >= 400) {
        const text = await readBodyPrefix(response.body, MAX_ERROR_BODY);
        // A 429 may wait for the rate-limit reset headers; anything else only for an explicit Retry-After.
        throw new LlmHttpError(
          response.statusCode,
          `HTTP ${response.statusCode}: ${providerMessage(text)}`,
          retryAfterMs(response.headers, Date.now(), response.statusCode === 429),
        );
      }
      if (!options.stream) {
        if (!type.includes("json")) throw new ProviderProtocolError(`expected JSON, got content-type ${JSON.stringify(type)}`);
        const chunks: Buffer[] = [];
        let bytes = 0;
        for await (const chunk of response.body) {
          bytes += (chunk as Buffer).length;
          if (bytes > this.#maxResponseBytes) throw new LlmResponseTooLargeError(this.#maxResponseBytes);
          chunks.push(chunk as Buffer);
        }
        let json: unknown;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch (err) {
          throw new ProviderProtocolError(`the answer is not JSON: ${(err as Error).message}`);
        }
        return this.provider.parse(json);
      }
      if (!type.includes("text/event-stream")) throw new ProviderProtocolError(`expected an event stream, got content-type ${JSON.stringify(type)}`);
      const translator = this.provider.stream(options.model);
      let done = false;
      let failure: unknown;
      const parser = createParser({
        onEvent: (event) => {
          if (done || failure) return;
          try {
            const out = translator.push(event);
            done = out.done;
            if (out.deltas.length > 0) {
              // The first real chunk ends the first-token clock; each one restarts the idle clock.
              arm("idle", options.idleMs);
              options.onDeltas?.(out.deltas);
            }
          } catch (err) {
            failure = err;
          }
        },
      });
      const decoder = new TextDecoder();
      for await (const chunk of response.body) {
        parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
        if (failure) throw failure;
      }
      if (!done && !translator.finished()) throw new ProviderProtocolError("the stream ended before the provider said the answer was complete");
      return translator.completion();
    } catch (err) {
      // The reason we aborted with (a timeout, a cancel) says more than undici's "Request aborted".
      const thrown = controller.signal.aborted ? (controller.signal.reason as unknown) : err;
      if (this.#secret && thrown instanceof Error && thrown.message.includes(this.#secret))
        thrown.message = thrown.message.split(this.#secret).join("[redacted]");
      throw thrown;
    } finally {
      clearTimeout(timer);
      clearTimeout(total);
      options.signal.removeEventListener("abort", onAbort);
      this.#inFlight -= 1;
      // An unread body would hold its connection; after an abort undici has destroyed it already.
      if (response && !response.body.destroyed) discardBody(response.body);
    }
  }

  async close(): Promise<void> {
    await this.#pool.destroy().catch(() => undefined);
  }
}

/** The provider's own words from an error body (OpenAI `error.message`, Anthropic `error.message`), else the text. */
function providerMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    const message = typeof body.error === "object" ? body.error?.message : (body.error ?? body.message);
    if (typeof message === "string" && message) return message.slice(0, 500);
  } catch {
    // not JSON
  }
  return text.slice(0, 200) || "(no body)";
}

/** `1s`, `6m0s`, `250ms`, `1h2m3.5s` (OpenAI's x-ratelimit-reset-*). */
function goDuration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let ms = 0;
  let matched = "";
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const n = Number(m[1]);
    ms += m[2] === "h" ? n * 3_600_000 : m[2] === "m" ? n * 60_000 : m[2] === "s" ? n * 1000 : n;
    matched += m[0];
  }
  return matched === text.trim() && matched !== "" ? ms : undefined;
}

/**
 * How long the provider asked us to wait: `retry-after-ms`, else `Retry-After` (seconds or an HTTP
 * date), else (with `resets`, for a 429) when the exhausted limit resets: of the `x-ratelimit-reset-*`
 * (OpenAI) and `anthropic-ratelimit-*-reset` headers, those whose limit has nothing `-remaining` (the
 * latest of them), or, when none says so, the soonest. A reset says when a limit is whole again, so
 * a limit that is not exhausted must not make us wait for it.
 */
export function retryAfterMs(headers: Record<string, string | string[] | undefined>, now = Date.now(), resets = true): number | undefined {
  const get = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const ms = Number(get("retry-after-ms"));
  if (get("retry-after-ms") !== undefined && Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const after = get("retry-after");
  if (after !== undefined) {
    const seconds = Number(after);
    if (after.trim() !== "" && Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
    const date = Date.parse(after);
    if (Number.isFinite(date)) return Math.max(0, date - now);
  }
  if (!resets) return undefined;
  let exhausted: number | undefined;
  let soonest: number | undefined;
  for (const [name, raw] of Object.entries(headers)) {
    const value = Array.isArray(raw) ? raw[0] : raw;
    if (value === undefined) continue;
    let wait: number | undefined;
    let remaining: string | undefined;
    if (name.startsWith("x-ratelimit-reset-")) {
      wait = goDuration(value);
      remaining = get(`x-ratelimit-remaining-${name.slice("x-ratelimit-reset-".length)}`);
    } else if (name.startsWith("anthropic-ratelimit-") && name.endsWith("-reset")) {
      const at = Date.parse(value);
      wait = Number.isFinite(at) ? Math.max(0, at - now) : undefined;
      remaining = get(`${name.slice(0, -"-reset".length)}-remaining`);
    }
    if (wait === undefined) continue;
    wait = Math.ceil(wait);
    if (remaining !== undefined && Number(remaining) <= 0) exhausted = Math.max(exhausted ?? 0, wait);
    soonest = Math.min(soonest ?? wait, wait);
  }
  return exhausted ?? soonest;
}
