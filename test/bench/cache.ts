/**
 * The cache's figures for `npm run bench`: a Zipf workload (1,000 distinct argument sets, s = 1.1)
 * through the router, with its hit ratio and the backend calls it saved (counted by the fault server).
 */
import type { ToolbusClient } from "@toolbus/client";

export interface ZipfFigures {
  calls: number;
  distinct: number;
  s: number;
  hitRatio: number;
  l1Hits: number;
  l2Hits: number;
  backendCalls: number;
  /** 1 − backend calls ÷ calls. */
  backendCallsSaved: number;
  callsPerSec: number;
}

/** A small seeded PRNG (mulberry32), so every run draws the same sequence. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Ranks 0..n-1 drawn with probability ∝ 1 / (rank+1)^s. */
export function zipf(n: number, s: number, seed = 42): () => number {
  const cdf: number[] = [];
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf.push((sum += 1 / k ** s));
  const next = random(seed);
  return () => {
    const u = next() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

async function echoesReceived(client: ToolbusClient, backend: string): Promise<number> {
  const { result } = await client.callTool(backend, "stats", {}, { cache: "bypass", timeoutMs: 10_000 });
  return (result.structuredContent as { byTool: Record<string, number> }).byTool.echo ?? 0;
}

/** Run `calls` Zipf-distributed echo calls at `inFlight` through the router, from a cold cache. */
export async function zipfBench(client: ToolbusClient, backend: string, calls: number, inFlight: number): Promise<ZipfFigures> {
  const distinct = 1_000;
  const s = 1.1;
  await client.invalidateCache(backend);
  const draw = zipf(distinct, s);
  const before = await echoesReceived(client, backend);
  let issued = 0;
  const tiers = { l1: 0, l2: 0, miss: 0 };
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (issued < calls) {
        issued++;
        const { meta } = await client.callTool(backend, "echo", { message: `doc-${draw()}` }, { timeoutMs: 10_000 });
        if (meta.cached === false) tiers.miss++;
        else tiers[meta.cached]++;
      }
    }),
  );
  const elapsed = performance.now() - t0;
  const backendCalls = (await echoesReceived(client, backend)) - before;
  const round = (n: number): number => Math.round(n * 1000) / 1000;
  return {
    calls,
    distinct,
    s,
    hitRatio: round((tiers.l1 + tiers.l2) / calls),
    l1Hits: tiers.l1,
    l2Hits: tiers.l2,
    backendCalls,
    backendCallsSaved: round(1 - backendCalls / calls),
    callsPerSec: Math.round((calls / elapsed) * 1000),
  };
}
