import { describe, expect, it } from "vitest";
import { ErrorCode, errorReply, type ToolCallOkReply } from "@toolbus/protocol";
import { abortReason } from "@toolbus/mcp-http";
import { SingleFlight, type CallReply } from "./single-flight.js";

const ok = (text: string): ToolCallOkReply => ({
  ok: true,
  result: { content: [{ type: "text", text }] },
  meta: { backend: "b", endpoint: "b#0", attempts: 1, cached: false, durationMs: 1 },
});

/** A call that answers when told to, counting how often it ran. */
function controllable() {
  let runs = 0;
  const answers: Array<(reply: CallReply) => void> = [];
  return {
    call: () => {
      runs++;
      return new Promise<CallReply>((resolve) => answers.push(resolve));
    },
    answer: (i: number, reply: CallReply) => answers[i]!(reply),
    get runs() {
      return runs;
    },
  };
}

describe("SingleFlight", () => {
  it("runs identical calls in flight at once as one; each waiter gets the answer", async () => {
    const flights = new SingleFlight();
    const backend = controllable();
    let joins = 0;
    const waiting = Array.from({ length: 5 }, () => flights.run("k", new AbortController().signal, backend.call, () => joins++));
    expect(backend.runs).toBe(1);
    backend.answer(0, ok("one"));
    const replies = await Promise.all(waiting);
    expect(replies.map((r) => r.reply)).toEqual(Array(5).fill(ok("one")));
    expect(replies.filter((r) => r.led)).toHaveLength(1);
    expect(joins).toBe(4);
    expect(flights.size).toBe(0);
    // Over: the next call runs afresh.
    void flights.run("k", new AbortController().signal, backend.call, () => joins++);
    expect(backend.runs).toBe(2);
  });

  it("shares an error too, but a waiter whose own deadline passes stops waiting at once", async () => {
    const flights = new SingleFlight();
    const backend = controllable();
    const leader = flights.run("k", new AbortController().signal, backend.call, () => undefined);
    const impatient = new AbortController();
    const waiter = flights.run("k", impatient.signal, backend.call, () => undefined);
    const other = flights.run("k", new AbortController().signal, backend.call, () => undefined);
    impatient.abort(abortReason("deadline", "the request's deadline passed"));
    expect((await waiter).reply).toMatchObject({ ok: false, error: { code: ErrorCode.DEADLINE_EXCEEDED } });
    backend.answer(0, errorReply(ErrorCode.BACKEND_ERROR, "boom"));
    expect((await leader).reply).toMatchObject({ ok: false, error: { code: ErrorCode.BACKEND_ERROR } });
    expect((await other).reply).toMatchObject({ ok: false, error: { code: ErrorCode.BACKEND_ERROR } });
    expect(backend.runs).toBe(1);
  });

  it("when the leader's own deadline or cancel ends the shared call, a waiter with time left calls itself", async () => {
    const flights = new SingleFlight();
    const backend = controllable();
    const leaderSignal = new AbortController();
    const leader = flights.run("k", leaderSignal.signal, backend.call, () => undefined);
    const waiter = flights.run("k", new AbortController().signal, backend.call, () => undefined);
    leaderSignal.abort(abortReason("client", "cancelled by the client"));
    backend.answer(0, errorReply(ErrorCode.CANCELLED, "cancelled by the client"));
    expect((await leader).reply).toMatchObject({ ok: false, error: { code: ErrorCode.CANCELLED } });
    await new Promise((r) => setImmediate(r));
    expect(backend.runs).toBe(2);
    backend.answer(1, ok("mine"));
    expect(await waiter).toEqual({ reply: ok("mine"), led: true });
  });

  it("a backend timeout is every waiter's answer: a failing backend is not called once per waiter", async () => {
    const flights = new SingleFlight();
    const backend = controllable();
    const calls = Array.from({ length: 5 }, () => flights.run("k", new AbortController().signal, backend.call, () => undefined));
    backend.answer(0, errorReply(ErrorCode.DEADLINE_EXCEEDED, "the backend did not answer within the adaptive timeout"));
    for (const c of await Promise.all(calls)) expect(c.reply).toMatchObject({ ok: false, error: { code: ErrorCode.DEADLINE_EXCEEDED } });
    expect(backend.runs).toBe(1);
  });

  it("a leader whose call throws (a bug) rejects; its waiters get INTERNAL, and nothing is left unhandled", async () => {
    const flights = new SingleFlight();
    let fail!: (err: Error) => void;
    const failing = () => new Promise<CallReply>((_resolve, reject) => (fail = reject));
    const leader = flights.run("k", new AbortController().signal, failing, () => undefined);
    const waiter = flights.run("k", new AbortController().signal, failing, () => undefined);
    fail(new Error("a bug"));
    await expect(leader).rejects.toThrow("a bug");
    expect((await waiter).reply).toMatchObject({ ok: false, error: { code: ErrorCode.INTERNAL } });
    expect(flights.size).toBe(0);
  });
});
