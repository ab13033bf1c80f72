import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ToolbusClient } from "@toolbus/client";
import { everythingStdio } from "../helpers/mcp.js";
import { startStack, waitFor, type Stack } from "../helpers/toolbus.js";

describe("NATS restart", () => {
  let stack: Stack;
  let client: ToolbusClient;

  beforeAll(async () => {
    stack = await startStack({ backends: { everything: everythingStdio() } });
    client = stack.client;
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  it("workers reconnect after the server stops and starts on the same port, with no restart of toolbus", async () => {
    const echo = () => client.callTool("everything", "echo", { message: "still here" }, { timeoutMs: 1_000 });
    expect((await echo()).result.content).toEqual([{ type: "text", text: "Echo: still here" }]);

    await stack.nats.stop();
    // While NATS is down, calls fail (they do not hang past their budget).
    const started = performance.now();
    await expect(echo()).rejects.toMatchObject({ name: "ToolbusError" });
    expect(performance.now() - started).toBeLessThan(1_500);

    await new Promise((r) => setTimeout(r, 500));
    await stack.nats.start();
    await waitFor("a call to succeed after NATS came back", async () => (await echo()).result.content.length === 1, 20_000);
    // And keeps working: not a fluke of one reconnect.
    for (let i = 0; i < 20; i++) expect((await echo()).meta.backend).toBe("everything");
    expect(stack.toolbus.nc.isClosed()).toBe(false);
  });
});
