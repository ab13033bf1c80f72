import { PassThrough } from "node:stream";
import { connect } from "nats";
import { describe, expect, it } from "vitest";
import type { CallerWorker } from "@toolbus/caller";
import { isToolbusError, type ToolbusClient } from "@toolbus/client";
import { faultStdio, httpBackend, startFaultHttp } from "../helpers/mcp.js";
import { startStack, toolbusCommand } from "../helpers/toolbus.js";

const MB20 = 20 * 1024 * 1024;

async function failure(call: Promise<unknown>): Promise<{ code: string; message: string; details?: Record<string, unknown> }> {
  try {
    await call;
  } catch (err) {
    if (isToolbusError(err)) return { code: err.code, message: err.message, details: err.details };
    throw err;
  }
  throw new Error("the call succeeded");
}

const echoes = async (client: ToolbusClient, backend: string): Promise<void> => {
  const { result } = await client.callTool(backend, "echo", { message: "still here" }, { timeoutMs: 5_000 });
  expect(result.content).toEqual([{ type: "text", text: "Echo: still here" }]);
};

describe("backend payloads are bounded", () => {
  it("HTTP: a 20 MB result is PAYLOAD_TOO_LARGE with the size; a 20 MB error body is cut to a few hundred bytes; the caller keeps serving", async () => {
    await using http = await startFaultHttp();
    await using stack = await startStack({ backends: { web: httpBackend(http.url) } });
    const big = await failure(stack.client.callTool("web", "big", { bytes: MB20 }, { timeoutMs: 10_000 }));
    expect(big.code).toBe("PAYLOAD_TOO_LARGE");
    expect(big.details).toMatchObject({ endpoint: "web#0", limitBytes: expect.any(Number), sizeBytes: expect.any(Number) });
    expect(big.details!.sizeBytes as number).toBeGreaterThan(big.details!.limitBytes as number);
    await echoes(stack.client, "web");

    const errorBody = await failure(stack.client.callTool("web", "http-error", { status: 500, bytes: MB20 }, { timeoutMs: 10_000 }));
    expect(errorBody.code).toBe("BACKEND_UNAVAILABLE");
    expect(errorBody.message.length).toBeLessThan(600);
    expect(errorBody.details).toMatchObject({ httpStatus: 500 });
    await echoes(stack.client, "web");
  });

  it("stdio: a 20 MB result is PAYLOAD_TOO_LARGE (above the NATS max payload), and the caller keeps serving", async () => {
    await using stack = await startStack({ backends: { fault: faultStdio(1) } });
    const child = (stack.toolbus.workers.find((w) => w.name === "caller:fault") as CallerWorker).endpoints[0]!;
    const pid = child.pid;
    const big = await failure(stack.client.callTool("fault", "big", { bytes: MB20 }, { timeoutMs: 10_000 }));
    expect(big.code).toBe("PAYLOAD_TOO_LARGE");
    expect(big.details).toMatchObject({ sizeBytes: expect.any(Number), limitBytes: expect.any(Number) });
    await echoes(stack.client, "fault");
    // The same child: a verbose answer is no reason to restart it.
    expect(child.pid).toBe(pid);
  });
});

describe("secrets in an HTTP backend's URL", () => {
  it("a ?token= and a user:password@ in the URL appear in no log line, no bus message, no reply and no `toolbus status`", async () => {
    const SECRET = "S3cr3tTok3n";
    await using http = await startFaultHttp();
    const url = http.url.replace("http://", `http://alice:${SECRET}@`) + `?token=${SECRET}`;
    const logs = new PassThrough();
    let logText = "";
    logs.on("data", (c: Buffer) => (logText += c.toString()));
    await using stack = await startStack(
      { backends: { web: { ...httpBackend(url), breaker: { volume: 2, recovery: "200ms" }, retry: { maxRetries: 0 } } } },
      { logs },
    );
    // Everything that crosses the bus: requests, replies, heartbeats, breaker events, status.
    const spy = await connect({ servers: stack.nats.url });
    let busText = "";
    spy.subscribe(">", { callback: (_e, m) => (busText += `${m.subject} ${m.headers ? [...m.headers].join(",") : ""} ${new TextDecoder().decode(m.data)}\n`) });
    await spy.flush();
    try {
      const { result, meta } = await stack.client.callTool("web", "echo", { message: "hi" }, { timeoutMs: 5_000 });
      let replies = JSON.stringify({ result, meta });
      // Failures of several kinds, and the breaker's transitions with them.
      for (const args of [
        ["rpc-error", {}],
        ["http-error", { status: 503, text: "no" }],
        ["http-error", { status: 401, text: "who are you" }],
      ] as const) {
        replies += JSON.stringify(await failure(stack.client.callTool("web", args[0], args[1], { timeoutMs: 5_000 })));
      }
      const status = await toolbusCommand(["--nats", stack.nats.url, "status"]);
      const statusJson = await toolbusCommand(["--nats", stack.nats.url, "status", "--json"]);
      expect(status.stdout).toContain("web#0");
      await spy.flush();
      await new Promise((r) => setTimeout(r, 300));

      // It was used: the server saw the token and the credentials (the fault server counts the calls).
      expect(busText).toContain("evt.breaker.web");
      expect(logText).toContain("backend endpoint connected");
      for (const [where, text] of Object.entries({ logs: logText, bus: busText, replies, status: status.stdout + statusJson.stdout })) {
        expect(text.includes(SECRET), `${SECRET} found in ${where}`).toBe(false);
      }
    } finally {
      await spy.close();
    }
  });
});
