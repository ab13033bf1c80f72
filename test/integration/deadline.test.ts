import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import { ErrorCode } from "@toolbus/protocol";
import { everythingStdio, faultStdio } from "../helpers/mcp.js";
import { startStack, waitFor, type Stack } from "../helpers/toolbus.js";

/** Run a call that must fail; return the error and how long it took. */
async function timed(run: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  try {
    await run();
    return { error: undefined, ms: performance.now() - started };
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
}

describe("deadlines", () => {
  let stack: Stack;
  let client: ToolbusClient;

  beforeAll(async () => {
    stack = await startStack({ backends: { everything: everythingStdio(), fault: faultStdio() } });
    client = stack.client;
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  async function cancelledAtBackend(): Promise<number> {
    const { result } = await client.callTool("fault", "stats", {}, { timeoutMs: 2_000 });
    return (result.structuredContent as { cancelled: number }).cancelled;
  }

  for (const direct of [false, true]) {
    const via = direct ? "straight to the caller" : "through the router";
    it(`a tool that outlives its budget → DEADLINE_EXCEEDED within budget + 100 ms, and the backend is told to cancel (${via})`, async () => {
      const before = await cancelledAtBackend();
      const budget = 500;
      const { error, ms } = await timed(() => client.callTool("fault", "sleep", { ms: 5_000 }, { timeoutMs: budget, direct }));
      expect(isToolbusError(error) && error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      // The caller answered, not the client's own timer: the message names the backend's cancellation.
      expect((error as Error).message).toMatch(/cancelled at the backend/);
      expect(ms).toBeLessThan(budget + 100);
      expect(ms).toBeGreaterThan(budget - 50);
      // notifications/cancelled reached the server, which aborted the tool's work.
      await waitFor("the backend to record the cancellation", async () => (await cancelledAtBackend()) === before + 1, 3_000);
    });
  }

  it("server-everything's long-running operation past the budget → DEADLINE_EXCEEDED in time", async () => {
    const budget = 800;
    const { error, ms } = await timed(() => client.callTool("everything", "trigger-long-running-operation", { duration: 5, steps: 5 }, { timeoutMs: budget }));
    expect(isToolbusError(error) && error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(ms).toBeLessThan(budget + 100);
  });

  it("a call that fits its budget succeeds, and the backend is still usable after cancellations", async () => {
    const { result } = await client.callTool("fault", "sleep", { ms: 100 }, { timeoutMs: 2_000 });
    expect(result.content).toEqual([{ type: "text", text: "slept 100 ms" }]);
  });

  it("an aborted signal rejects with CANCELLED at once", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const { error, ms } = await timed(() => client.callTool("fault", "sleep", { ms: 2_000 }, { timeoutMs: 5_000, signal: controller.signal }));
    expect(isToolbusError(error) && error.code).toBe(ErrorCode.CANCELLED);
    expect(ms).toBeLessThan(1_000);
  });
});
