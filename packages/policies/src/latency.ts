export interface LatencyOptions {
  /** Samples kept per key (the most recent). */
  window: number;
  /** Below this many samples, `timeoutFor` gives `defaultMs`. */
  minSamples: number;
  /** Timeout = multiplier × p99 of the window ... */
  multiplier: number;
  /** ... clamped to [minMs, maxMs]. */
  minMs: number;
  maxMs: number;
  /** Timeout while there are too few samples (the profile's call timeout). */
  defaultMs: number;
}

/** How often the p99 is recomputed (in samples): sorting 256 numbers per call would cost more than the call. */
const RECOMPUTE_EVERY = 16;

class Series {
  readonly samples: number[] = [];
  next = 0;
  sinceCompute = 0;
  p99: number | undefined;
}

/**
 * Latency per key (backend + tool) over a sliding window of samples, and the adaptive timeout that
 * follows from it: a slow outlier is cut well before the request's whole budget is spent.
 */
export class LatencyEstimator {
  readonly #series = new Map<string, Series>();

  constructor(readonly options: LatencyOptions) {}

  record(key: string, ms: number): void {
    let series = this.#series.get(key);
    if (!series) this.#series.set(key, (series = new Series()));
    if (series.samples.length < this.options.window) series.samples.push(ms);
    else series.samples[series.next] = ms;
    series.next = (series.next + 1) % this.options.window;
    if (++series.sinceCompute >= RECOMPUTE_EVERY || series.p99 === undefined) {
      series.sinceCompute = 0;
      series.p99 = series.samples.length >= this.options.minSamples ? percentile(series.samples, 0.99) : undefined;
    }
  }

  /** The p99 of `key`, once there are enough samples. */
  p99(key: string): number | undefined {
    return this.#series.get(key)?.p99;
  }

  /** The timeout for the next call of `key`. */
  timeoutFor(key: string): number {
    const p99 = this.p99(key);
    if (p99 === undefined) return this.options.defaultMs;
    return Math.min(this.options.maxMs, Math.max(this.options.minMs, Math.ceil(p99 * this.options.multiplier)));
  }
}

/**
 * The q-quantile (nearest rank) of `values`. A high quantile is one of the few largest values, so one
 * pass keeping the k largest beats copying and sorting the window (this runs on the hot path).
 */
export function percentile(values: readonly number[], q: number): number {
  const rank = Math.min(values.length, Math.max(1, Math.ceil(q * values.length)));
  const k = values.length - rank + 1; // the answer is the k-th largest
  const top: number[] = []; // the k largest so far, ascending
  for (const v of values) {
    if (top.length < k) {
      let i = top.length;
      top.push(v);
      for (; i > 0 && top[i - 1]! > v; i--) top[i] = top[i - 1]!;
      top[i] = v;
    } else if (v > top[0]!) {
      let i = 0;
      for (; i + 1 < k && top[i + 1]! < v; i++) top[i] = top[i + 1]!;
      top[i] = v;
    }
  }
  return top[0]!;
}
