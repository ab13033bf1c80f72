import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/paths.js";
import { removeTempDirs, tempDir } from "../helpers/toolbus.js";

describe("npm run bench", () => {
  afterAll(removeTempDirs);
  it("runs every row (smoke size) and writes the figures as JSON", async () => {
    const out = tempDir("toolbus-bench-");
    const { code, output } = await new Promise<{ code: number; output: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "test/bench/bench.ts", "--smoke", "--out", out], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (c: Buffer) => (output += c.toString()));
      child.stderr.on("data", (c: Buffer) => (output += c.toString()));
      child.once("exit", (c) => resolve({ code: c ?? -1, output }));
    });
    expect(code, output).toBe(0);
    expect(output).toMatch(/calls\/s ÷ direct/);
    const [file] = readdirSync(out);
    const report = JSON.parse(readFileSync(join(out, file!), "utf8")) as {
      rows: Array<{ name: string; concurrent: { callsPerSec: number; calls: number } }>;
      zipf: { calls: number; hitRatio: number; backendCalls: number; backendCallsSaved: number };
      openLoop: Array<{ path: string; targetRate: number; ok: number; errors: Record<string, number> }>;
      llm: { rows: Array<{ name: string; callsPerSec: number }>; reuse: { requests: number; connections: number } };
      gateway: Array<{ name: string; callsPerSec: number }>;
    };
    expect(report.rows.map((r) => r.name)).toEqual([
      "direct SDK, stdio",
      "direct SDK, streamable HTTP",
      "toolbus router → stdio",
      "toolbus caller → stdio",
      "toolbus router → http",
      "toolbus caller → http",
      "toolbus router → http (SDK transport)",
      "toolbus caller → http (SDK transport)",
      "Moleculer service → stdio (one hop)",
      "toolbus router → cache hit",
      "toolbus router → cache miss → stdio",
      "toolbus router → stdio, logged in a conversation",
    ]);
    for (const row of report.rows) {
      expect(row.concurrent.calls).toBe(128);
      expect(row.concurrent.callsPerSec).toBeGreaterThan(0);
    }
    // The Zipf workload repeats its popular arguments: some calls are hits, and the backend sees fewer calls.
    expect(report.zipf.calls).toBe(500);
    expect(report.zipf.hitRatio).toBeGreaterThan(0);
    expect(report.zipf.backendCalls).toBeLessThan(500);
    expect(output).toMatch(/hit ÷ uncached router→stdio calls\/s/);
    // The open loop ran each path at each rate, and the calls were answered.
    expect(report.openLoop.map((r) => `${r.targetRate} ${r.path}`)).toEqual(
      [1000, 2000, 4000].flatMap((rate) => ["toolbus router → stdio", "toolbus caller → stdio", "Moleculer service → stdio"].map((p) => `${rate} ${p}`)),
    );
    for (const r of report.openLoop) {
      expect(r.ok).toBeGreaterThan(0);
      expect(r.errors).toEqual({});
    }
    // The LLM rows: the official client and toolbus against the same server, and toolbus reused its connections.
    expect(report.llm.rows.map((r) => r.name)).toEqual(["direct openai client", "toolbus router → openai-compatible"]);
    expect(report.llm.reuse.connections).toBeLessThan(report.llm.reuse.requests / 2);
    // The MCP front door beside its peers, each in front of the same stdio server.
    expect(report.gateway.map((r) => r.name)).toEqual([
      "direct SDK → server-everything HTTP",
      "toolbus up: gateway → stdio",
      "toolbus gateway ⇄ NATS ⇄ caller → stdio",
      "toolbus gateway ⇄ NATS ⇄ router ⇄ caller → stdio",
      "mcp-proxy → stdio",
      "supergateway (stateful) → stdio",
    ]);
    for (const r of report.gateway) expect(r.callsPerSec).toBeGreaterThan(0);
  });
});
