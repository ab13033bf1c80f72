import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../helpers/mcp.js";
import { ROOT } from "../helpers/paths.js";
import { waitFor } from "../helpers/toolbus.js";

// The README's quickstart, run as a newcomer would (after `npm ci`, which CI has just done).
const START = "npm start";
const CALL = `npx toolbus call everything echo '{"message":"hello"}'`;
const CHAT = `npx toolbus chat assistant "Say hello"`;

function sh(command: string, env: Record<string, string>): Promise<{ code: number; out: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn("sh", ["-c", command], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    child.once("exit", (code) => resolve({ code: code ?? -1, out, stdout }));
  });
}

describe("README quickstart", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  let stopStart: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await stopStart?.();
  });

  it("names the commands this test runs", () => {
    expect(readme).toContain("npm ci && npm start");
    expect(readme).toContain(CALL);
    expect(readme).toContain(CHAT);
  });

  it("`npm start` brings toolbus up (starting its own NATS when none answers) and the call prints the echo", async () => {
    // A port where nothing listens, so `toolbus up` has to start nats-server itself, as on a fresh laptop.
    const env = { TOOLBUS_NATS_URL: `nats://127.0.0.1:${await freePort()}`, TOOLBUS_ADMIN_PORT: "0" };
    // Own process group, so the test can stop npm and everything it started, and nothing else.
    const start = spawn("sh", ["-c", START], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let log = "";
    start.stdout.on("data", (c: Buffer) => (log += c.toString()));
    start.stderr.on("data", (c: Buffer) => (log += c.toString()));
    // "close", not "exit": it waits until every process of the group has let go of the output pipes.
    const closed = new Promise<void>((resolve) => start.once("close", () => resolve()));
    stopStart = async () => {
      if (start.exitCode === null) process.kill(-start.pid!, "SIGTERM");
      return closed;
    };

    let last = { code: -1, out: "", stdout: "" };
    await waitFor(
      "the quickstart call to print the echo",
      async () => {
        last = await sh(CALL, env);
        return last.code === 0;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nlast call: ${last.out}\ntoolbus up said:\n${log.slice(-3000)}`);
    });
    expect(last.stdout.trim()).toBe("Echo: hello");
    // The LLM backend of the example: toolbus launched its server, and the chat goes through.
    await waitFor("the quickstart chat to answer", async () => (last = await sh(CHAT, env)).code === 0, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\nlast chat: ${last.out}`);
    });
    expect(last.stdout.trim()).toBe("Hello from the fault server.");
    expect(log).toMatch(/started nats-server with JetStream/);
    await stopStart();
    // toolbus drained and stopped the nats-server it had started.
    expect(log).toMatch(/"msg":"stopped"/);
    stopStart = undefined;
  });
});
