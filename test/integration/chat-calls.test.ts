import { existsSync, readFileSync, utimesSync } from "node:fs";
import { Writable } from "node:stream";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chatFileName } from "@toolbus/protocol";
import type { RouterWorker } from "@toolbus/router";
import { readChatLogs, type LoggedEvent } from "../helpers/chat.js";
import { faultStdio, everythingStdio } from "../helpers/mcp.js";
import { removeTempDirs, runToolbus, startStack, tempDir, toolbusCommand, waitFor, type Stack } from "../helpers/toolbus.js";

describe("tool calls that name a conversation are logged in it", () => {
  let stack: Stack;
  let dir: string;

  const lines = (conversation: string): LoggedEvent[] => readChatLogs(dir).get(conversation) ?? [];

  beforeAll(async () => {
    dir = tempDir("toolbus-chat-calls-");
    stack = await startStack({
      cache: { enabled: true },
      chatLog: { enabled: true, dir },
      backends: { fault: { ...faultStdio(), breaker: { volume: 100 }, retry: { maxRetries: 0 } }, everything: everythingStdio() },
    });
    await waitFor("the router to see the cache", () => (stack.toolbus.workers.find((w) => w.name === "router") as RouterWorker).cache!.available());
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  it("through the router: tool_call then tool_result (or error), UTC timestamps; a call without one logs nothing", async () => {
    const { client } = stack;
    await client.callTool("fault", "flaky-unsafe", { id: "logged", failures: 0 }, { timeoutMs: 5_000, conversationId: "conv-A" });
    await expect(client.callTool("fault", "rpc-error", {}, { timeoutMs: 5_000, conversationId: "conv-A" })).rejects.toMatchObject({ code: "BACKEND_ERROR" });
    await client.callTool("everything", "get-sum", { a: 2, b: 3 }, { timeoutMs: 5_000, conversationId: "conv-A" });
    await waitFor("six lines", () => lines("conv-A").length >= 6, 10_000);
    // A call that names no conversation adds nothing to the stream.
    const jsm = await client.nc.jetstreamManager();
    const before = (await jsm.streams.info("TOOLBUS_CHAT")).state.messages;
    await client.callTool("fault", "flaky-unsafe", { id: "unlogged", failures: 0 }, { timeoutMs: 5_000 });
    await new Promise((r) => setTimeout(r, 200));
    expect((await jsm.streams.info("TOOLBUS_CHAT")).state.messages).toBe(before);
    const log = lines("conv-A");
    expect(log.map((l) => l.type)).toEqual(["tool_call", "tool_result", "tool_call", "error", "tool_call", "tool_result"]);
    expect(log[0]!.payload).toMatchObject({ backend: "fault", tool: "flaky-unsafe", arguments: { id: "logged", failures: 0 } });
    expect(log[1]!.payload).toMatchObject({ tool: "flaky-unsafe", result: { content: [{ type: "text", text: "flaky logged: attempt 1 succeeded" }] } });
    expect(log[3]!.payload).toMatchObject({ tool: "rpc-error", error: { code: "BACKEND_ERROR" } });
    expect(log[5]!.payload).toMatchObject({ backend: "everything", tool: "get-sum" });
    for (const line of log) {
      expect(line.conversationId).toBe("conv-A");
      expect(line.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    // The call that named no conversation is in no file.
    expect(readFileSync(join(dir, chatFileName("conv-A")), "utf8")).not.toMatch(/unlogged/);
  });

  it("`toolbus chat-log tail` reads the stream, `toolbus chat-log show` the file", async () => {
    const tail = await toolbusCommand(["--nats", stack.nats.url, "chat-log", "tail", "conv-A"]);
    expect(tail.stderr).toBe("");
    expect(tail.code).toBe(0);
    const tailed = tail.stdout.trim().split("\n");
    expect(tailed.map((l) => l.split(/\s+/)[1])).toEqual(["tool_call", "tool_result", "tool_call", "error", "tool_call", "tool_result"]);
    expect(tailed[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z {2}tool_call +\{"backend":"fault","tool":"flaky-unsafe"/);
    const show = await toolbusCommand(["chat-log", "show", "conv-A", "--dir", dir, "--json"]);
    expect(show.code).toBe(0);
    expect(
      show.stdout
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { type: string }).type),
    ).toEqual(tailed.map((l) => l.split(/\s+/)[1]));
    const missing = await toolbusCommand(["chat-log", "show", "nobody", "--dir", dir]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(/cannot read .*nobody\.jsonl: ENOENT/);
    const bad = await toolbusCommand(["chat-log", "tail", "../etc", "--nats", stack.nats.url]);
    expect(bad.code).toBe(2);
    // `toolbus call --conversation` logs the call.
    const cliCall = await toolbusCommand(["--nats", stack.nats.url, "call", "fault", "echo", '{"message":"from the cli"}', "--conversation", "conv-cli"]);
    expect(cliCall.stdout).toBe("Echo: from the cli\n");
    await waitFor("the cli call's lines", () => lines("conv-cli").length === 2, 10_000);
    expect(lines("conv-cli").map((l) => l.type)).toEqual(["tool_call", "tool_result"]);
  });

  it("`toolbus chat-log tail -f` follows new events until Ctrl-C; `prune` deletes old files only", async () => {
    const follow = runToolbus(["--nats", stack.nats.url, "chat-log", "tail", "conv-follow", "-f", "--json"]);
    await new Promise((r) => setTimeout(r, 1_500));
    const { id } = await stack.client.publishChatEvent({ conversationId: "conv-follow", type: "user_message", payload: { text: "followed" } });
    await waitFor("the followed event", () => follow.output().includes(id), 10_000);
    follow.kill("SIGINT");
    expect(await follow.exited).toBe(0);
    expect(
      JSON.parse(
        follow
          .output()
          .trim()
          .split("\n")
          .find((l) => l.includes(id))!,
      ),
    ).toMatchObject({ id, type: "user_message" });

    await waitFor("the followed event's file", () => lines("conv-follow").length === 1, 10_000);
    const old = join(dir, chatFileName("conv-follow"));
    const longAgo = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(old, longAgo, longAgo);
    const dry = await toolbusCommand(["chat-log", "prune", "--older-than", "1h", "--dir", dir, "--dry-run"]);
    expect(dry.stdout).toMatch(/would delete .*_conv-follow|would delete .*conv-follow\.jsonl/);
    expect(existsSync(old)).toBe(true);
    const pruned = await toolbusCommand(["chat-log", "prune", "--older-than", "1h", "--dir", dir]);
    expect(pruned.code).toBe(0);
    expect(pruned.stdout).toMatch(/1 conversation file deleted\n$/);
    expect(existsSync(old)).toBe(false);
    expect(lines("conv-A").length).toBeGreaterThan(0);
  });

  it("a call answered by the cache is logged too, with meta.cached", async () => {
    const { client } = stack;
    const call = () => client.callTool("fault", "echo", { message: "cached and logged" }, { timeoutMs: 5_000, conversationId: "conv-B" });
    await call();
    await waitFor("the hit", async () => (await call()).meta.cached === "l1");
    await waitFor("the hit's lines", () => lines("conv-B").some((l) => (l.payload.meta as { cached?: unknown } | undefined)?.cached === "l1"), 10_000);
    const log = lines("conv-B");
    expect(log.length % 2).toBe(0);
    for (let i = 0; i < log.length; i += 2) expect([log[i]!.type, log[i + 1]!.type]).toEqual(["tool_call", "tool_result"]);
  });

  it("a conversation id that cannot be a file name is refused with the call, before anything runs", async () => {
    await expect(stack.client.callTool("fault", "echo", { message: "x" }, { timeoutMs: 5_000, conversationId: "../../etc" })).rejects.toMatchObject({
      code: "BAD_REQUEST",
      message: expect.stringMatching(/conversationId/),
    });
  });
});

describe("a chat stream that is gone", () => {
  it("calls still succeed at once; their events are dropped after a few attempts, with one warning", async () => {
    let logs = "";
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs += chunk.toString();
        done();
      },
    });
    await using stack = await startStack({ backends: { fault: faultStdio() } }, { logs: sink });
    const jsm = await stack.client.nc.jetstreamManager();
    await jsm.streams.delete("TOOLBUS_CHAT");
    const started = performance.now();
    for (let i = 0; i < 3; i++) await stack.client.callTool("fault", "echo", { message: `m${i}` }, { timeoutMs: 5_000, conversationId: "gone" });
    expect(performance.now() - started).toBeLessThan(1_000);
    // 5 attempts, 100 ms apart and doubling: dropped after about 1.5 s, and said once.
    await waitFor("the warning", () => /chat events cannot be stored/.test(logs), 10_000);
    expect(logs.match(/chat events cannot be stored/g)).toHaveLength(1);
  });
});
