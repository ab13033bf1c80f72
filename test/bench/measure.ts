import { readFileSync } from "node:fs";

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

/** user + system CPU of a process so far, in µs (Linux /proc; clock ticks of 10 ms). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** One row of a side-by-side table: sequential and 64-in-flight latencies (ms, to the µs) and calls/s. */
export interface LatencyRow {
  name: string;
  seqP50: number;
  seqP99: number;
  callsPerSec: number;
  p50At64: number;
  p99At64: number;
  /** With pids: those processes' CPU µs per call at 64 in flight, together. */
  cpuMicrosPerCall?: number;
}

/** The `q` quantile of unsorted `values`, to the µs. */
export const quantileOf = (values: number[], q: number): number =>
  Math.round(
    quantile(
      [...values].sort((a, b) => a - b),
      q,
    ) * 1000,
  ) / 1000;

/**
 * Warm up (8 in flight), then `sequential` calls one at a time and `concurrent` at 64 in flight; with
 * `pids`, also those processes' CPU per call (summed) during the 64-in-flight part.
 */
export async function latencyRow(
  name: string,
  call: () => Promise<unknown>,
  sizes: { sequential: number; concurrent: number; warmup: number },
  pids: readonly number[] = [],
): Promise<LatencyRow> {
  const cpu = (): number => pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
  await closedLoop(call, sizes.warmup, 8);
  const seq = await closedLoop(call, sizes.sequential, 1);
  const before = cpu();
  const conc = await closedLoop(call, sizes.concurrent, 64);
  const row: LatencyRow = {
    name,
    seqP50: quantileOf(seq.latencies, 0.5),
    seqP99: quantileOf(seq.latencies, 0.99),
    callsPerSec: Math.round((conc.latencies.length / conc.elapsedMs) * 1000),
    p50At64: quantileOf(conc.latencies, 0.5),
    p99At64: quantileOf(conc.latencies, 0.99),
    ...(pids.length === 0 ? {} : { cpuMicrosPerCall: Math.round((cpu() - before) / sizes.concurrent) }),
  };
  process.stderr.write(`  ${name}: p50 ${row.seqP50} ms, ${row.callsPerSec} calls/s at 64 in flight\n`);
  return row;
}

/** Resident memory of a process, in MiB to one decimal (Linux /proc). */
export function rssMiB(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  return Math.round((kb / 1024) * 10) / 10;
}

/**
 * Warm up (2,000 calls), then `calls` calls at `inFlight`: the calls/s, and the CPU µs per call of each
 * process in `pids` over those calls.
 */
export async function cpuPerCall(
  call: () => Promise<unknown>,
  pids: Readonly<Record<string, number>>,
  calls: number,
  inFlight: number,
): Promise<{ callsPerSec: number; cpuMicrosPerCall: Record<string, number> }> {
  await closedLoop(call, 2_000, inFlight);
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuMicros(pid)]));
  const { elapsedMs } = await closedLoop(call, calls, inFlight);
  return {
    callsPerSec: Math.round(calls / (elapsedMs / 1000)),
    cpuMicrosPerCall: Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, Math.round((cpuMicros(pid) - before[name]!) / calls)])),
  };
}
