/**
 * What `npm run bench` compares toolbus with, and how: a Moleculer service on the same NATS calling the
 * same stdio server through the same MCP SDK client (its own process, as toolbus is), and an open-loop
 * load: requests sent on a schedule, not on replies, as real traffic arrives.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { ServiceBroker } from "moleculer";
import { ROOT } from "../helpers/paths.js";
import { quantile } from "./measure.js";

export interface MoleculerPeer {
  /** The service process (for its CPU per call). */
  readonly pid: number;
  /** One call of `tool` through the peer, one hop: client broker → NATS → service → stdio server. */
  call(tool: string, args: Record<string, unknown>): Promise<unknown>;
  stop(): Promise<void>;
}

export async function startMoleculerPeer(natsUrl: string): Promise<MoleculerPeer> {
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", join(ROOT, "test/bench/peers/moleculer-service.ts"), natsUrl], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`the Moleculer peer exited (${code}) before it was ready`)));
  });
  const broker = new ServiceBroker({ nodeID: `bench-client-${process.pid}`, transporter: natsUrl, logger: false });
  await broker.start();
  await broker.waitForServices("mcp", 10_000);
  return {
    pid: child.pid!,
    call: (tool, args) => broker.call("mcp.call", { tool, arguments: args }),
    stop: async () => {
      await broker.stop();
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export interface OpenLoopFigures {
  targetRate: number;
  maxInFlight: number;
  seconds: number;
  /** Calls answered per second (ok or not). */
  achievedRate: number;
  sent: number;
  ok: number;
  /** Sends skipped because `maxInFlight` calls were still out: the load was more than the path could take. */
  drops: number;
  /** Failed calls, by error code. */
  errors: Record<string, number>;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  /** The latest a send went out after its scheduled time (the bench's timer, not the path). */
  lagMs: number;
}

/**
 * Send `rate` calls a second for `seconds`, on a schedule that does not wait for answers (so a slow
 * answer delays nobody's send, as with real clients), with at most `maxInFlight` out: a send due
 * while that many are out is dropped and counted. Latency is from the send; `lagMs` is how late the
 * bench's own timer made the sends (up to a tick of about 1 ms), reported apart so it is not billed to
 * the path measured.
 */
export async function openLoop(call: () => Promise<unknown>, rate: number, maxInFlight: number, seconds: number): Promise<OpenLoopFigures> {
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let sent = 0;
  let ok = 0;
  let drops = 0;
  let inFlight = 0;
  let lag = 0;
  const total = Math.round(rate * seconds);
  const t0 = performance.now();
  let due = 0;
  await new Promise<void>((resolve) => {
    let finished = 0;
    const settle = (): void => {
      finished++;
      if (due >= total && finished === sent) resolve();
    };
    const tick = (): void => {
      const now = performance.now();
      const shouldHaveSent = Math.min(total, Math.floor(((now - t0) / 1000) * rate));
      while (due < shouldHaveSent) {
        const scheduled = t0 + (due * 1000) / rate;
        lag = Math.max(lag, now - scheduled);
        due++;
        if (inFlight >= maxInFlight) {
          drops++;
          continue;
        }
        inFlight++;
        sent++;
        const start = performance.now();
        call()
          .then(
            () => {
              ok++;
              latencies.push(performance.now() - start);
            },
            (err: { code?: string }) => {
              const code = err?.code ?? "ERROR";
              errors[code] = (errors[code] ?? 0) + 1;
              latencies.push(performance.now() - start);
            },
          )
          .finally(() => {
            inFlight--;
            settle();
          });
      }
      if (due < total) setTimeout(tick, 1);
      else if (sent === 0 || finished === sent) resolve();
    };
    tick();
  });
  const elapsed = (performance.now() - t0) / 1000;
  const sorted = latencies.sort((a, b) => a - b);
  const at = (q: number): number => Math.round(quantile(sorted, q) * 1000) / 1000;
  return {
    targetRate: rate,
    maxInFlight,
    seconds,
    achievedRate: Math.round(latencies.length / elapsed),
    sent,
    ok,
    drops,
    errors,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    max: Math.round((sorted.at(-1) ?? 0) * 1000) / 1000,
    lagMs: Math.round(lag * 1000) / 1000,
  };
}
