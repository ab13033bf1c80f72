import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Msg, type NatsConnection } from "nats";
import { CancelRequestSchema, Headers, decodeJson, encodeJson, subjects } from "@toolbus/protocol";
import { startNats, type TestNats } from "../../../test/helpers/nats-server.js";
import { ErrorCode, LocalRoutes, ToolbusClient } from "./index.js";

const okReply = (text: string) => ({
  ok: true,
  result: { content: [{ type: "text", text }] },
  meta: { backend: "b", endpoint: "e", attempts: 1, cached: false, durationMs: 0 },
});

describe("LocalRoutes: requests to a worker of the same process skip the NATS server", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  /** A worker elsewhere, on the bus: it answers "over nats" and remembers what it got. */
  let overNats: Msg[];
  const local = new LocalRoutes();
  let client: ToolbusClient;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    overNats = [];
    nc.subscribe(subjects.backendCall("b"), {
      callback: (_err, msg) => {
        overNats.push(msg);
        // Progress first when asked for (as a caller relays it), then the answer.
        const to = msg.headers?.get(Headers.ProgressTo);
        if (to) nc.publish(to, encodeJson({ progress: 1, total: 2 }));
        msg.respond(encodeJson(okReply("over nats")));
      },
    });
    await nc.flush();
    client = new ToolbusClient(nc, { local });
  });
  afterAll(async () => {
    await client?.close();
    await nc?.close();
    await nats?.[Symbol.asyncDispose]();
  });

  it("a request to a subject served here goes to its handler with its headers, and the answer comes back without the server", async () => {
    const seen: Msg[] = [];
    const withdraw = local.serve(subjects.backendCall("b"), (msg) => {
      seen.push(msg);
      msg.respond(encodeJson(okReply("in process")));
    });
    try {
      const { result } = await client.callTool("b", "echo", { message: "hi" }, { timeoutMs: 2_000, direct: true, requestId: "local-1" });
      expect(result).toMatchObject({ content: [{ text: "in process" }] });
      expect(overNats).toHaveLength(0);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.headers?.get(Headers.RequestId)).toBe("local-1");
      expect(Number(seen[0]!.headers?.get(Headers.TimeoutMs))).toBe(2_000);
      expect(decodeJson(seen[0]!.data)).toEqual({ backend: "b", tool: "echo", arguments: { message: "hi" } });
    } finally {
      withdraw();
    }
    // Withdrawn (a worker that stops): the next request goes over the bus.
    const { result } = await client.callTool("b", "echo", {}, { timeoutMs: 2_000, direct: true });
    expect(result).toMatchObject({ content: [{ text: "over nats" }] });
    expect(overNats).toHaveLength(1);
    overNats.length = 0;
  });

  it("a call that wants progress goes over the bus, so its progress is not overtaken by its answer", async () => {
    const withdraw = local.serve(subjects.backendCall("b"), (msg) => msg.respond(encodeJson(okReply("in process"))));
    try {
      const progress: unknown[] = [];
      const { result } = await client.callTool("b", "slow", {}, { timeoutMs: 2_000, direct: true, onProgress: (p) => progress.push(p) });
      expect(result).toMatchObject({ content: [{ text: "over nats" }] });
      expect(progress).toEqual([{ progress: 1, total: 2 }]);
      expect(overNats).toHaveLength(1);
      overNats.length = 0;
    } finally {
      withdraw();
    }
  });

  it("an error answer, a handler that never answers (deadline), and a cancel that still travels on the bus", async () => {
    const withdraw = local.serve(subjects.backendCall("b"), (msg) => {
      const { tool } = decodeJson(msg.data) as { tool: string };
      if (tool === "fail") msg.respond(encodeJson({ ok: false, error: { code: ErrorCode.BACKEND_ERROR, message: "it broke", retryable: false } }));
      // "hang": no answer at all
    });
    const cancels: unknown[] = [];
    const cancelSub = nc.subscribe(subjects.cancelCall("b"), { callback: (_e, m) => cancels.push(CancelRequestSchema.parse(decodeJson(m.data))) });
    await nc.flush();
    try {
      await expect(client.callTool("b", "fail", {}, { timeoutMs: 2_000, direct: true })).rejects.toMatchObject({
        code: ErrorCode.BACKEND_ERROR,
        message: "it broke",
      });
      await expect(client.callTool("b", "hang", {}, { timeoutMs: 200, direct: true })).rejects.toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
      const abort = new AbortController();
      const call = client.callTool("b", "hang", {}, { timeoutMs: 5_000, direct: true, signal: abort.signal, requestId: "local-cancel" });
      setTimeout(() => abort.abort(), 50);
      await expect(call).rejects.toMatchObject({ code: ErrorCode.CANCELLED });
      await nc.flush();
      await expect.poll(() => cancels).toEqual([{ requestId: "local-cancel", reason: "aborted by the client" }]);
      expect(overNats).toHaveLength(0);
    } finally {
      cancelSub.unsubscribe();
      withdraw();
    }
  });

  it("several handlers of one subject take turns; each withdraws on its own", () => {
    const routes = new LocalRoutes();
    const a = (): void => undefined;
    const b = (): void => undefined;
    const withdrawA = routes.serve("s", a);
    const withdrawB = routes.serve("s", b);
    expect([routes.handlerOf("s"), routes.handlerOf("s"), routes.handlerOf("s")]).toEqual([a, b, a]);
    withdrawA();
    expect([routes.handlerOf("s"), routes.handlerOf("s")]).toEqual([b, b]);
    withdrawB();
    expect(routes.handlerOf("s")).toBeUndefined();
  });
});
