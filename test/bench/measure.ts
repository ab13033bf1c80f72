/** A closed loop: `total` calls, `inFlight` at a time, each sent when one before it answered. */
export async function closedLoop(call: () => Promise<unknown>, total: number, inFlight: number): Promise<{ latencies: number[]; elapsedMs: number }> {
  const latencies: number[] = [];
  let issued = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (issued < total) {
        issued++;
        const s = performance.now();
        await call();
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { latencies, elapsedMs: performance.now() - t0 };
}

/** The `q` quantile of ascending `sorted` (the element at ⌊q·n⌋, the last for q = 1); 0 when there is none. */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}
