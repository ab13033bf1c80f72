import { describe, expect, it } from "vitest";
import { HealthTracker, type ProbeResult } from "./tracker.js";

const ok = (latencyMs = 5): ProbeResult => ({ ok: true, latencyMs });
const fail: ProbeResult = { ok: false, reason: "connection refused" };

describe("HealthTracker", () => {
  const make = () => new HealthTracker({ unhealthyAfter: 3, healthyAfter: 2, degradedMs: 100 }, 0);

  it("is unknown until the first answer, then healthy", () => {
    const t = make();
    expect(t.state).toBe("unknown");
    expect(t.record(ok(), 10)).toEqual({ state: "healthy", previous: "unknown", reason: "answered in 5 ms" });
    expect(t.since).toBe(10);
    expect(t.previous).toBe("unknown");
    expect(t.record(ok(), 20)).toBeUndefined();
  });

  it("never unhealthy on one failed probe: only after 3 in a row", () => {
    const t = make();
    t.record(ok());
    expect(t.record(fail)).toBeUndefined();
    expect(t.record(fail)).toBeUndefined();
    expect(t.record(ok())).toBeUndefined(); // the streak is broken
    expect(t.record(fail)).toBeUndefined();
    expect(t.record(fail)).toBeUndefined();
    expect(t.record(fail)).toEqual({ state: "unhealthy", previous: "healthy", reason: "connection refused" });
  });

  it("healthy again only after 2 successes in a row", () => {
    const t = make();
    for (let i = 0; i < 3; i++) t.record(fail);
    expect(t.state).toBe("unhealthy");
    expect(t.record(ok())).toBeUndefined();
    expect(t.record(fail)).toBeUndefined();
    expect(t.record(ok())).toBeUndefined();
    expect(t.record(ok())).toMatchObject({ state: "healthy", previous: "unhealthy" });
  });

  it("a backend down from the start goes from unknown to unhealthy", () => {
    const t = make();
    t.record(fail);
    t.record(fail);
    expect(t.state).toBe("unknown");
    expect(t.record(fail)).toMatchObject({ state: "unhealthy", previous: "unknown" });
  });

  it("degraded while answers are slower than the threshold, healthy when they are fast again", () => {
    const t = make();
    t.record(ok());
    expect(t.record(ok(250))).toEqual({ state: "degraded", previous: "healthy", reason: "answered in 250 ms, over 100 ms" });
    expect(t.latencyMs).toBe(250);
    expect(t.record(ok(20))).toMatchObject({ state: "healthy", previous: "degraded" });
  });

  it("lost when rediscovery gives up; failures leave it lost; healthy again after 2 answers", () => {
    const t = make();
    t.record(ok());
    for (let i = 0; i < 3; i++) t.record(fail);
    expect(t.markLost("not found on ports 1-2")).toEqual({ state: "lost", previous: "unhealthy", reason: "not found on ports 1-2" });
    for (let i = 0; i < 5; i++) expect(t.record(fail)).toBeUndefined();
    expect(t.state).toBe("lost");
    expect(t.record(ok())).toBeUndefined();
    expect(t.record(ok())).toMatchObject({ state: "healthy", previous: "lost" });
  });
});
