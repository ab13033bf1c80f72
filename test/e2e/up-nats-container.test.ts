import { execFile } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient } from "@toolbus/client";
import { containersRequired, hasPodman, natsImage } from "../helpers/containers.js";
import { faultStdio, freePort } from "../helpers/mcp.js";
import { removeTempDirs, runToolbus, tempDir, waitFor, waitForBackends, writeConfig } from "../helpers/toolbus.js";

const run = promisify(execFile);

/** Names of the containers (running or not) whose name starts with `prefix`. */
async function containersNamed(prefix: string): Promise<string[]> {
  const { stdout } = await run("podman", ["ps", "-a", "--filter", `name=^${prefix}`, "--format", "{{.Names}}"]);
  return stdout.split("\n").filter(Boolean);
}

describe.skipIf(!hasPodman && !containersRequired)("`toolbus up` with no nats-server binary starts NATS in a container", () => {
  let image: string;
  let path: string;

  beforeAll(async () => {
    image = await natsImage();
    // A nats-server that is not there: first on the PATH, it fails as a missing binary would.
    const bin = tempDir("toolbus-no-nats-bin-");
    writeFileSync(join(bin, "nats-server"), "#!/bin/sh\nexit 127\n");
    chmodSync(join(bin, "nats-server"), 0o755);
    path = `${bin}:${process.env.PATH}`;
  }, 300_000);
  afterAll(() => removeTempDirs());

  async function up(): Promise<{ proc: ReturnType<typeof runToolbus>; port: number; url: string }> {
    const port = await freePort();
    const config = writeConfig({ backends: { fault: faultStdio() }, cache: { enabled: false }, chatLog: { enabled: false }, gateway: { enabled: false } });
    const url = `nats://127.0.0.1:${port}`;
    const proc = runToolbus(["--config", config, "--nats", url, "--admin-port", "-1", "up"], {
      env: { PATH: path, TOOLBUS_NATS_IMAGE: image, TOOLBUS_LOG_LEVEL: "info" },
    });
    await waitFor("NATS in a container", () => /started NATS with JetStream in a container/.test(proc.output()), 60_000).catch((err: Error) => {
      proc.kill("SIGKILL");
      throw new Error(`${err.message}\n${proc.output().slice(-2000)}`);
    });
    return { proc, port, url };
  }

  it("serves calls through it, and a stop (SIGTERM) removes the container", async () => {
    const { proc, port, url } = await up();
    const client = await ToolbusClient.connect({ servers: url });
    try {
      await waitForBackends(client, ["fault"]);
      const { result } = await client.callTool("fault", "echo", { message: "via a NATS container" });
      expect(result.content).toEqual([{ type: "text", text: "Echo: via a NATS container" }]);
      expect(await containersNamed(`toolbus-nats-${port}-`)).toHaveLength(1);
    } finally {
      await client.close();
    }
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
    expect(await containersNamed(`toolbus-nats-${port}-`)).toEqual([]);
  }, 120_000);

  it("killed (SIGKILL), toolbus still takes its NATS container with it", async () => {
    const { proc, port } = await up();
    proc.kill("SIGKILL");
    await proc.exited;
    await waitFor("the container to be removed", async () => (await containersNamed(`toolbus-nats-${port}-`)).length === 0, 30_000);
  }, 120_000);
});
