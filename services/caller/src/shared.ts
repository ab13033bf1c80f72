import type { BreakerTransition } from "@toolbus/policies";
import { encodeJson, subjects, type BreakerEvent } from "@toolbus/protocol";
import { BREAKER_STATE_VALUE, type Logger, type WorkerDeps } from "@toolbus/runtime";

/** What MCP and LLM callers both use; kept apart from either so neither loads the other's code. */

/** Kept back from the budget so our answer reaches the client before its own timer fires. */
export const REPLY_MARGIN_MS = 3;

/** Wait `ms`, or less if `signal` aborts (a stop out of grace must not wait for a backoff). */
export const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/** Every endpoint's breaker starts closed: the gauge shows it from the start, not from the first transition. */
export function breakersClosed(deps: WorkerDeps, backend: string, endpoints: readonly { readonly id: string }[]): void {
  for (const e of endpoints) deps.metrics.breakerState.set({ backend, endpoint: e.id }, BREAKER_STATE_VALUE.closed);
}

/** Log a breaker transition, publish it on `toolbus.v1.evt.breaker.<backend>`, and set `toolbus_breaker_state`. */
export function breakerEvent(deps: WorkerDeps, log: Logger, backend: string, endpoint: { readonly id: string }, t: BreakerTransition): void {
  const event: BreakerEvent = {
    backend,
    endpoint: endpoint.id,
    from: t.from,
    to: t.to,
    reason: t.reason,
    workerId: deps.workerId,
    time: new Date().toISOString(),
  };
  (t.to === "open" ? log.warn : log.info).call(log, event, `breaker ${t.from} → ${t.to}`);
  deps.metrics.breakerState.set({ backend, endpoint: endpoint.id }, BREAKER_STATE_VALUE[t.to]);
  if (!deps.nc.isClosed()) deps.nc.publish(subjects.breakerEvents(backend), encodeJson(event));
}

/**
 * The least-busy endpoint that `admits` a call, preferring ones not `tried` yet for this request; ties
 * go round-robin from `rotation`, so a pool shares sequential load too.
 */
export function leastBusy<E extends { readonly inFlight: number }>(
  endpoints: readonly E[],
  rotation: number,
  admits: (endpoint: E) => boolean,
  tried: ReadonlySet<E> | undefined,
): E | undefined {
  let best: E | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  const n = endpoints.length;
  for (let i = 0; i < n; i++) {
    const e = endpoints[(rotation + i) % n]!;
    if (!admits(e)) continue;
    const score = e.inFlight + (tried?.has(e) ? n * 1_000_000 : 0);
    if (score < bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}
