import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient } from "@toolbus/client";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { everythingStdio } from "../helpers/mcp.js";
import { startInProcess, testConfig, waitFor, waitForBackends } from "../helpers/toolbus.js";

describe("NATS restart", () => {
  let nats: TestNats;
  let toolbus: Awaited<ReturnType<typeof startInProcess>>;
  let client: ToolbusClient;

  beforeAll(async () => {
    nats = await startNats();
    toolbus = await startInProcess(testConfig(nats.url, { backends: { everything: everythingStdio() } }));
    client = await ToolbusClient.connect({ servers: nats.url });
    await waitForBackends(client, ["everything"]);
  });
  afterAll(async () => {
    await client?.close();
    await toolbus?.stop();
    await nats?.[Symbol.asyncDispose]();
  });

  it("workers reconnect after the server stops and starts on the same port, with no restart of toolbus", async () => {
    const echo = () => client.callTool("everything", "echo", { message: "still here" }, { timeoutMs: 1_000 });
    expect((await echo()).result.content).toEqual([{ type: "text", text: "Echo: still here" }]);

    await nats.stop();
    // While NATS is down, calls fail (they do not hang past their budget).
    const started = performance.now();
    await expect(echo()).rejects.toMatchObject({ name: "ToolbusError" });
    expect(performance.now() - started).toBeLessThan(1_500);

    await new Promise((r) => setTimeout(r, 500));
    await nats.start();
    await waitFor("a call to succeed after NATS came back", async () => (await echo()).result.content.length === 1, 20_000);
    // And keeps working: not a fluke of one reconnect.
    for (let i = 0; i < 20; i++) expect((await echo()).meta.backend).toBe("everything");
    expect(toolbus.nc.isClosed()).toBe(false);
  });
});
