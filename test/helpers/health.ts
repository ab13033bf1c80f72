import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { startFaultHttp, type HttpServerProcess } from "./mcp.js";
import { startNats, type TestNats } from "./nats-server.js";
import { writeConfig } from "./toolbus.js";

/** Steps run in reverse order after a test file (register each as it is made, so a failure leaves nothing). */
export type Cleanup = Array<() => Promise<void> | void>;

/**
 * What the health-prober e2e tests start from: a nats-server of their own, the fault server over HTTP,
 * and a config with one HTTP backend `web` probed every 250 ms. Everything goes on `cleanup`.
 */
export async function proberFixture(cleanup: Cleanup): Promise<{ nats: TestNats; server: HttpServerProcess; config: string }> {
  const nats = await startNats();
  cleanup.push(() => nats[Symbol.asyncDispose]());
  const server = await startFaultHttp();
  cleanup.push(() => server.stop());
  const config = writeConfig({
    admin: { port: -1 },
    backends: { web: { kind: "mcp-http", url: server.url, health: { interval: "250ms", timeout: "200ms" } } },
  });
  cleanup.push(() => rmSync(dirname(config), { recursive: true, force: true }));
  return { nats, server, config };
}
