import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { startNats, type TestNats } from "../../../test/helpers/nats-server.js";
import { ErrorCode, ToolbusClient } from "./index.js";

describe("ToolbusClient against a real NATS with no toolbus running", () => {
  let nats: TestNats;
  let client: ToolbusClient;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startNats();
    client = await ToolbusClient.connect({ servers: nats.url });
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await client?.close();
    await nc?.close();
    await nats?.[Symbol.asyncDispose]();
  });

  it("no router → BACKEND_UNAVAILABLE at once, not a wait for the deadline", async () => {
    const started = performance.now();
    await expect(client.callTool("any", "echo", {}, { timeoutMs: 5_000 })).rejects.toMatchObject({ code: ErrorCode.BACKEND_UNAVAILABLE, message: /no router/ });
    await expect(client.callTool("any", "echo", {}, { timeoutMs: 5_000, direct: true })).rejects.toMatchObject({ message: /no caller serves backend "any"/ });
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("a responder that never answers → DEADLINE_EXCEEDED just after the budget", async () => {
    const sub = nc.subscribe("toolbus.v1.tool.call", { callback: () => undefined });
    await nc.flush();
    const started = performance.now();
    await expect(client.callTool("any", "echo", {}, { timeoutMs: 300 })).rejects.toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
    const ms = performance.now() - started;
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(ms).toBeLessThan(450);
    sub.unsubscribe();
  });

  it("answers are matched to their requests when many are in flight", async () => {
    const sub = nc.subscribe("toolbus.v1.tool.call", {
      callback: (_err, msg) => {
        const body = msg.json<{ arguments: { n: number } }>();
        // Answer in reverse-ish order to prove the matching does not rely on order.
        setTimeout(
          () => msg.respond(JSON.stringify({ ok: true, result: { content: [{ type: "text", text: String(body.arguments.n) }] }, meta: {} })),
          50 - (body.arguments.n % 50),
        );
      },
    });
    await nc.flush();
    const results = await Promise.all(Array.from({ length: 100 }, (_, n) => client.callTool("any", "echo", { n }, { timeoutMs: 2_000 })));
    expect(results.map((r) => (r.result.content[0] as unknown as { text: string }).text)).toEqual(Array.from({ length: 100 }, (_, n) => String(n)));
    sub.unsubscribe();
  });

  it("rejects a non-positive timeout and a malformed backend name as BAD_REQUEST without sending", async () => {
    await expect(client.callTool("any", "echo", {}, { timeoutMs: 0 })).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST });
    await expect(client.callTool("Not.Valid", "echo", {}, { direct: true })).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST });
  });
});
