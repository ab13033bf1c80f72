import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileConfig } from "@toolbus/config";
import { startNats, type TestNats } from "../../../test/helpers/nats-server.js";
import { createLogger, runWorkers, type Worker } from "./index.js";

describe("logger", () => {
  it("redacts secrets wherever they sit", () => {
    let out = "";
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString();
        done();
      },
    });
    const log = createLogger({ destination: sink });
    log
      .child({ requestId: "r-1" })
      .info({ nats: { servers: ["nats://x"], pass: "hunter2", token: "t0k" }, headers: { Authorization: "Bearer abc" }, apiKey: "k" }, "hello");
    const line = JSON.parse(out) as Record<string, unknown>;
    expect(line.requestId).toBe("r-1");
    expect(out).not.toMatch(/hunter2|t0k|Bearer abc|"k"/);
    expect(out).toMatch(/\[redacted\]/);
  });
});

describe("runWorkers: admin server and lifecycle against a real NATS", () => {
  let nats: TestNats;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]();
  });

  it("serves /healthz, /readyz (with reasons) and /metrics, and stops workers in order", async () => {
    const config = compileConfig({ nats: { servers: [nats.url] }, admin: { port: 0 } }, { baseDir: ".", source: "(test)" });
    let ready = false;
    const stopped: string[] = [];
    const worker = (name: string): Worker => ({
      name,
      notReady: () => (ready ? [] : [`${name} is warming up`]),
      stop: async () => void stopped.push(name),
      stopped: Promise.resolve(),
    });
    const proc = await runWorkers({ name: "test", config, logger: createLogger({ level: "silent" }), start: async () => [worker("first"), worker("second")] });
    const base = `http://127.0.0.1:${proc.adminPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const notReady = await fetch(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.text()).toMatch(/first is warming up\nsecond is warming up/);
    ready = true;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/# TYPE toolbus_requests_total counter/);
    expect(metrics).toMatch(/process_cpu_seconds_total/);
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    await proc.stop();
    expect(stopped).toEqual(["first", "second"]);
    expect(proc.nc.isClosed()).toBe(true);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
