import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection, type Subscription } from "nats";
import { subjects, type HealthEvent } from "@toolbus/protocol";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { runToolbus, toolbusCommand, waitFor, type ToolbusProcess } from "../helpers/toolbus.js";

// `toolbus health` as a user runs it, against a stand-in for the health prober (the command is what is
// tested, not the prober): a responder on toolbus.v1.health.get with a fixed table, and events published
// by the test.

function endpoint(backend: string, n: number, state: HealthEvent["state"], extra: Partial<HealthEvent> = {}): HealthEvent {
  const since = new Date(Date.now() - 12_000).toISOString();
  return {
    backend,
    endpoint: `${backend}#${n}`,
    state,
    previous: "unknown",
    reason: state === "unhealthy" ? "connect ECONNREFUSED 127.0.0.1:1" : state === "degraded" ? "answered in 900 ms, above 500 ms" : "ok",
    latencyMs: state === "unhealthy" ? null : state === "degraded" ? 900 : 3.2,
    since,
    time: since,
    proberId: "prober-test",
    change: true,
    ...extra,
  };
}

const mixed = [endpoint("everything", 0, "healthy"), endpoint("files", 0, "degraded"), endpoint("files", 1, "unhealthy")];
const serving = [endpoint("everything", 0, "healthy"), endpoint("files", 0, "degraded"), endpoint("files", 1, "healthy")];

describe("toolbus health", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let prober: Subscription | undefined;
  const running: ToolbusProcess[] = [];

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  afterEach(async () => {
    prober?.unsubscribe();
    prober = undefined;
    for (const p of running.splice(0)) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.kill("SIGKILL");
        await p.exited;
      }
    }
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.[Symbol.asyncDispose]();
  });

  /** The stand-in prober: answers every table request with `table`. */
  async function answer(table: HealthEvent[]): Promise<void> {
    prober = nc.subscribe(subjects.healthGet(), { callback: (_err, msg) => msg.respond(JSON.stringify({ ok: true, endpoints: table })) });
    await nc.flush();
  }

  const health = (...args: string[]) => toolbusCommand(["--nats", nats.url, "health", ...args]);

  it("--json prints the prober's endpoints as they are", async () => {
    await answer(mixed);
    const { code, stdout } = await health("--json");
    expect(JSON.parse(stdout)).toEqual(mixed);
    expect(code).toBe(4);
  });

  it("prints a table with every endpoint and its state; exit 4 when one is unhealthy", async () => {
    await answer(mixed);
    const { code, stdout, stderr } = await health();
    expect(stderr).toBe("");
    const lines = stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^BACKEND\s+ENDPOINT\s+STATE\s+LATENCY\s+SINCE\s+REASON$/);
    expect(lines).toHaveLength(4);
    for (const [i, e] of mixed.entries()) {
      expect(lines[i + 1]).toMatch(new RegExp(`^${e.backend}\\s+${e.endpoint}\\s+${e.state}\\s`));
      expect(lines[i + 1]).toContain(e.reason);
    }
    expect(lines[1]).toMatch(/3\.2ms\s+\d+s ago/);
    expect(lines[3]).toMatch(/unhealthy\s+-\s+/);
    // A pipe gets no colour.
    expect(stdout).not.toContain("\x1b[");
    expect(code).toBe(4);
  });

  it("exit 0 when every endpoint is healthy or degraded", async () => {
    await answer(serving);
    const { code, stdout } = await health();
    expect(stdout).toMatch(/files#1\s+healthy/);
    expect(code).toBe(0);
  });

  it("no health prober → a message naming it and exit 4, at once", async () => {
    const started = Date.now();
    const { code, stdout, stderr } = await health();
    expect(stdout).toBe("");
    expect(stderr).toMatch(/BACKEND_UNAVAILABLE: no health prober is running/);
    expect(code).toBe(4);
    const json = await health("--json");
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: "BACKEND_UNAVAILABLE" } });
    expect(json.code).toBe(4);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("NATS unreachable → exit 5", async () => {
    const { code, stderr } = await toolbusCommand(["--nats", "nats://127.0.0.1:1", "health"]);
    expect(stderr).toMatch(/cannot reach NATS/);
    expect(code).toBe(5);
  });

  it("--watch on a pipe: the table once, then a line per state change (not per heartbeat); Ctrl-C exits 0", async () => {
    await answer(mixed);
    const watch = runToolbus(["--nats", nats.url, "health", "--watch"]);
    running.push(watch);
    await waitFor("the first table", () => /files#1\s+unhealthy/.test(watch.output()), 15_000);
    // The table is read after the subscription is made: from here on no event is missed.
    const now = new Date().toISOString();
    nc.publish(subjects.healthEvents("everything"), JSON.stringify(endpoint("everything", 0, "healthy", { change: false, time: now })));
    nc.publish(
      subjects.healthEvents("files"),
      JSON.stringify(endpoint("files", 1, "healthy", { previous: "unhealthy", latencyMs: 4, reason: "ok", since: now, time: now })),
    );
    nc.publish(
      subjects.healthEvents("everything"),
      JSON.stringify(endpoint("everything", 0, "unhealthy", { previous: "healthy", reason: "timed out after 2000 ms", since: now, time: now })),
    );
    await nc.flush();
    const changes = (): string[] =>
      watch
        .output()
        .split("\n")
        .filter((l) => l.includes(" -> "));
    await waitFor("two change lines", () => changes().length >= 2, 10_000);
    // Nothing else comes.
    await new Promise((r) => setTimeout(r, 200));
    expect(changes()).toEqual([`${now}  files#1  unhealthy -> healthy  4.0ms  ok`, `${now}  everything#0  healthy -> unhealthy  -  timed out after 2000 ms`]);
    watch.kill("SIGINT");
    expect(await watch.exited).toBe(0);
  });
});
