import { readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { describe, expect, it } from "vitest";
import { ToolbusClient, isToolbusError } from "@toolbus/client";
import { freePort } from "../helpers/mcp.js";
import { startNats } from "../helpers/nats-server.js";
import { EVERYTHING_SERVER, FAULT_SERVER } from "../helpers/paths.js";
import { childPids, isAlive, runToolbus, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";

/** Every process under `pid`, depth first. */
async function descendants(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const child of await childPids(pid)) out.push(child, ...(await descendants(child)));
  return out;
}

/** The server process itself (node running it), not the keeper shell whose command line names it too. */
const isServer = (pid: number, script: string): boolean => commandLine(pid).startsWith(`${process.execPath} ${script}`);

const commandLine = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
};

describe("backend processes toolbus starts", () => {
  it("a launched HTTP server killed from outside is started again and calls succeed; SIGKILL of `toolbus up` leaves no backend process behind", async () => {
    await using nats = await startNats();
    const port = await freePort();
    const config = writeConfig({
      admin: { port: -1 },
      heartbeat: 200,
      backends: {
        // The reference server, launched by toolbus and reached over streamable HTTP.
        everything: {
          kind: "mcp-http",
          url: `http://127.0.0.1:${port}/mcp`,
          launch: { command: process.execPath, args: [EVERYTHING_SERVER, "streamableHttp"], env: { PORT: String(port) } },
        },
        fault: { kind: "mcp-stdio", command: process.execPath, args: [FAULT_SERVER], pool: 2 },
      },
    });
    const toolbus = runToolbus(["up", "--config", config, "--nats", nats.url]);
    const client = await ToolbusClient.connect({ servers: nats.url });
    let pids: number[] = [];
    try {
      await waitForBackends(client, ["everything", "fault"], 30_000);
      const echo = async (): Promise<string> => {
        try {
          const { result } = await client.callTool("everything", "echo", { message: "hi" }, { timeoutMs: 3_000 });
          return (result.content[0] as unknown as { text: string }).text;
        } catch (err) {
          if (isToolbusError(err)) return err.code;
          throw err;
        }
      };
      expect(await echo()).toBe("Echo: hi");

      // The server itself (under its keeper shell), killed from outside.
      const server = (await descendants(toolbus.child.pid!)).find((p) => isServer(p, EVERYTHING_SERVER));
      expect(server, toolbus.output()).toBeDefined();
      process.kill(server!, "SIGKILL");
      await waitFor("the launched server to be started again", async () => {
        const again = (await descendants(toolbus.child.pid!)).find((p) => p !== server && isServer(p, EVERYTHING_SERVER));
        return again !== undefined;
      });
      await waitFor("calls to succeed again", async () => (await echo()) === "Echo: hi", 20_000);
      expect(toolbus.output()).toMatch(/launched server exited; starting it again/);

      // SIGKILL: toolbus gets no chance to clean up. Its backends must notice on their own.
      pids = await descendants(toolbus.child.pid!);
      expect(pids.filter((p) => isServer(p, FAULT_SERVER))).toHaveLength(2);
      expect(pids.some((p) => isServer(p, EVERYTHING_SERVER))).toBe(true);
      toolbus.kill("SIGKILL");
      await toolbus.exited;
      await waitFor("every backend process to be gone", () => pids.every((p) => !isAlive(p)), 10_000);
    } finally {
      for (const p of pids) if (isAlive(p)) process.kill(p, "SIGKILL");
      toolbus.kill("SIGKILL");
      await client.close();
      rmSync(dirname(config), { recursive: true, force: true });
    }
  });
});
