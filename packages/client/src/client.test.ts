import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, type Msg, type NatsConnection, type Subscription } from "nats";
import { CancelRequestSchema, Headers, subjects, type CancelRequest, type HealthEvent } from "@toolbus/protocol";
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
  // A test's unsubscribes reach the server before the next test's requests (else no 503, a wait for the deadline).
  afterEach(async () => {
    await nc.flush();
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

  /** Collects the CancelRequests published for `backend`, with the time each arrived. */
  async function cancelsOf(backend: string): Promise<{ received: { body: CancelRequest; at: number }[]; sub: Subscription }> {
    const received: { body: CancelRequest; at: number }[] = [];
    const sub = nc.subscribe(subjects.cancelCall(backend), {
      callback: (_err, msg) => received.push({ body: CancelRequestSchema.parse(msg.json()), at: performance.now() }),
    });
    await nc.flush();
    return { received, sub };
  }

  /** A responder on `subject` that never answers; resolves each request's Toolbus-Request-Id as it arrives. */
  async function silentResponder(subject: string): Promise<{ next(): Promise<string>; sub: Subscription }> {
    const waiting: ((id: string) => void)[] = [];
    const arrived: string[] = [];
    const sub = nc.subscribe(subject, {
      callback: (_err, msg) => {
        const id = msg.headers?.get(Headers.RequestId) ?? "";
        const w = waiting.shift();
        if (w) w(id);
        else arrived.push(id);
      },
    });
    await nc.flush();
    return {
      sub,
      next: () => (arrived.length > 0 ? Promise.resolve(arrived.shift()!) : new Promise((r) => waiting.push(r))),
    };
  }

  async function until(check: () => boolean, ms = 1_000): Promise<void> {
    const deadline = performance.now() + ms;
    while (!check() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  it("an aborted call through the router publishes a CancelRequest with the request id it sent, within 100 ms", async () => {
    const cancels = await cancelsOf("slow");
    const router = await silentResponder(subjects.toolCall());
    const abort = new AbortController();
    const call = client.callTool("slow", "sleep", {}, { timeoutMs: 5_000, signal: abort.signal });
    const sentId = await router.next();
    expect(sentId).not.toBe("");
    const abortedAt = performance.now();
    abort.abort();
    await expect(call).rejects.toMatchObject({ code: ErrorCode.CANCELLED });
    await until(() => cancels.received.length > 0);
    expect(cancels.received.map((c) => c.body)).toEqual([{ requestId: sentId, reason: "aborted by the client" }]);
    expect(cancels.received[0]!.at - abortedAt).toBeLessThan(100);
    cancels.sub.unsubscribe();
    router.sub.unsubscribe();
  });

  it("an aborted direct call publishes the cancel with the caller's own request id", async () => {
    const cancels = await cancelsOf("slow");
    const caller = await silentResponder(subjects.backendCall("slow"));
    const abort = new AbortController();
    const call = client.callTool("slow", "sleep", {}, { timeoutMs: 5_000, signal: abort.signal, direct: true, requestId: "my-request-1" });
    expect(await caller.next()).toBe("my-request-1");
    const abortedAt = performance.now();
    abort.abort();
    await expect(call).rejects.toMatchObject({ code: ErrorCode.CANCELLED });
    await until(() => cancels.received.length > 0);
    expect(cancels.received.map((c) => c.body)).toEqual([{ requestId: "my-request-1", reason: "aborted by the client" }]);
    expect(cancels.received[0]!.at - abortedAt).toBeLessThan(100);
    cancels.sub.unsubscribe();
    caller.sub.unsubscribe();
  });

  it("a call that ends normally, times out or lists tools publishes no cancel", async () => {
    const cancels = await cancelsOf("quiet");
    const router = nc.subscribe(subjects.toolCall(), {
      callback: (_err, msg) => msg.respond(JSON.stringify({ ok: true, result: { content: [] }, meta: {} })),
    });
    await nc.flush();
    const abort = new AbortController();
    await client.callTool("quiet", "echo", {}, { timeoutMs: 2_000, signal: abort.signal });
    abort.abort();
    router.unsubscribe();
    const silent = await silentResponder(subjects.toolCall());
    await expect(client.callTool("quiet", "echo", {}, { timeoutMs: 50 })).rejects.toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
    await nc.flush();
    await new Promise((r) => setTimeout(r, 50));
    expect(cancels.received).toEqual([]);
    cancels.sub.unsubscribe();
    silent.sub.unsubscribe();
  });

  it("close() with calls pending rejects them CANCELLED and publishes a cancel for each", async () => {
    const cancels = await cancelsOf("slow");
    const router = await silentResponder(subjects.toolCall());
    const caller = await silentResponder(subjects.backendCall("slow"));
    const own = await ToolbusClient.connect({ servers: nats.url });
    const viaRouter = own.callTool("slow", "sleep", {}, { timeoutMs: 5_000 });
    const direct = own.callTool("slow", "sleep", {}, { timeoutMs: 5_000, direct: true });
    const ids = [await router.next(), await caller.next()];
    const rejected = Promise.all([
      expect(viaRouter).rejects.toMatchObject({ code: ErrorCode.CANCELLED }),
      expect(direct).rejects.toMatchObject({ code: ErrorCode.CANCELLED }),
    ]);
    await own.close();
    await rejected;
    await until(() => cancels.received.length >= 2);
    expect(cancels.received.map((c) => c.body.requestId).sort()).toEqual(ids.sort());
    expect(cancels.received.every((c) => c.body.reason === "the client was closed")).toBe(true);
    cancels.sub.unsubscribe();
    router.sub.unsubscribe();
    caller.sub.unsubscribe();
  });

  it("an abort after the connection closed still rejects CANCELLED and throws nothing", async () => {
    const router = await silentResponder(subjects.toolCall());
    const conn = await connect({ servers: nats.url });
    const onConn = new ToolbusClient(conn);
    const abort = new AbortController();
    const call = onConn.callTool("slow", "sleep", {}, { timeoutMs: 5_000, signal: abort.signal });
    await router.next();
    await conn.close();
    // A listener that throws would surface as an uncaught exception, which fails the run.
    abort.abort();
    await expect(call).rejects.toMatchObject({ code: ErrorCode.CANCELLED });
    await onConn.close();
    router.sub.unsubscribe();
  });
  describe("health", () => {
    const at = "2026-01-02T03:04:05.000Z";
    function event(backend: string, n: number, state: HealthEvent["state"], change = true): HealthEvent {
      return {
        backend,
        endpoint: `${backend}#${n}`,
        state,
        previous: "unknown",
        reason: state === "unhealthy" ? "connect ECONNREFUSED" : "ok",
        latencyMs: state === "unhealthy" ? null : 12.5,
        since: at,
        time: at,
        proberId: "prober-test",
        change,
      };
    }
    const table = [event("everything", 0, "healthy"), event("files", 0, "degraded"), event("files", 1, "unhealthy")];

    /** A stand-in for the health prober (not what is tested here): answers every request with `answer`. */
    async function fakeProber(answer: (msg: Msg) => unknown): Promise<Subscription> {
      const sub = nc.subscribe(subjects.healthGet(), { callback: (_err, msg) => msg.respond(JSON.stringify(answer(msg))) });
      await nc.flush();
      return sub;
    }

    it("health() returns the prober's table, asked with a budget header", async () => {
      const asked: (string | undefined)[] = [];
      const prober = await fakeProber((msg) => {
        asked.push(msg.headers?.get(Headers.TimeoutMs));
        return { ok: true, endpoints: table };
      });
      expect(await client.health({ timeoutMs: 2_000 })).toEqual(table);
      expect(asked).toEqual(["2000"]);
      prober.unsubscribe();
      // Flushed: otherwise the server may still route the next test's request to it (no 503, a wait for the deadline).
      await nc.flush();
    });

    it("no prober → BACKEND_UNAVAILABLE at once, naming the health prober", async () => {
      const started = performance.now();
      await expect(client.health({ timeoutMs: 5_000 })).rejects.toMatchObject({ code: ErrorCode.BACKEND_UNAVAILABLE, message: /no health prober is running/ });
      expect(performance.now() - started).toBeLessThan(1_000);
    });

    it("an answer that is not a health table → INTERNAL; a wire error → that error", async () => {
      let answer: unknown = { ok: true, endpoints: [{ ...table[0], state: "sleepy" }] };
      const prober = await fakeProber(() => answer);
      await expect(client.health({ timeoutMs: 2_000 })).rejects.toMatchObject({ code: ErrorCode.INTERNAL, message: /not a health table/ });
      answer = { ok: false, error: { code: "OVERLOADED", message: "busy", retryable: true } };
      await expect(client.health({ timeoutMs: 2_000 })).rejects.toMatchObject({ code: ErrorCode.OVERLOADED, message: "busy", retryable: true });
      prober.unsubscribe();
      await nc.flush();
    });

    it("a prober that never answers → DEADLINE_EXCEEDED after the budget", async () => {
      const sub = nc.subscribe(subjects.healthGet(), { callback: () => undefined });
      await nc.flush();
      await expect(client.health({ timeoutMs: 100 })).rejects.toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
      sub.unsubscribe();
    });

    it("watchHealth() delivers every backend's valid events, ignores the rest, and stop() ends it", async () => {
      const seen: HealthEvent[] = [];
      const watch = client.watchHealth((e) => seen.push(e));
      await client.nc.flush();
      const sent = [event("everything", 0, "unhealthy"), event("files", 1, "healthy", false)];
      nc.publish(subjects.healthEvents("everything"), JSON.stringify(sent[0]));
      nc.publish(subjects.healthEvents("files"), "not json");
      nc.publish(subjects.healthEvents("files"), JSON.stringify({ ...sent[1], latencyMs: -1 }));
      nc.publish(subjects.healthEvents("files"), JSON.stringify(sent[1]));
      await until(() => seen.length >= 2);
      expect(seen).toEqual(sent);
      watch.stop();
      watch.stop();
      await client.nc.flush();
      nc.publish(subjects.healthEvents("everything"), JSON.stringify(sent[0]));
      await nc.flush();
      await new Promise((r) => setTimeout(r, 50));
      expect(seen).toHaveLength(2);
    });

    it("close() ends the watches of a client on a connection it does not own", async () => {
      const conn = await connect({ servers: nats.url });
      const onConn = new ToolbusClient(conn);
      const seen: HealthEvent[] = [];
      onConn.watchHealth((e) => seen.push(e));
      await conn.flush();
      await onConn.close();
      await conn.flush();
      nc.publish(subjects.healthEvents("everything"), JSON.stringify(table[0]));
      await nc.flush();
      await new Promise((r) => setTimeout(r, 50));
      expect(seen).toEqual([]);
      await conn.close();
    });
  });
});
