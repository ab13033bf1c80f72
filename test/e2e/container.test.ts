import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient } from "@toolbus/client";
import { containersRequired, hasPodman, localBaseImage } from "../helpers/containers.js";
import { freePort } from "../helpers/mcp.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { ROOT } from "../helpers/paths.js";
import { removeTempDirs, tempDir, waitFor, waitForBackends } from "../helpers/toolbus.js";

const run = promisify(execFile);
const IMAGE = "localhost/toolbus:test";

const podman = async (...args: string[]): Promise<string> => (await run("podman", args, { maxBuffer: 64 * 1024 * 1024 })).stdout;

/** The CA bundle npm trusts here (a TLS-inspecting proxy's CA among them), for npm inside the build. */
function npmCaFile(): string | undefined {
  const candidates = [process.env.NODE_EXTRA_CA_CERTS, process.env.SSL_CERT_FILE, "/etc/ssl/certs/ca-certificates.crt"];
  return candidates.find((f): f is string => typeof f === "string" && f !== "" && existsSync(f));
}

describe.skipIf(!hasPodman && !containersRequired)("the container image (deploy/docker/Dockerfile), built and run with podman", () => {
  let nats: TestNats;
  const containers: string[] = [];

  beforeAll(async () => {
    if (!hasPodman) throw new Error("podman is not installed: run deploy/docker/setup-podman.sh (as .ci/run does)");
    // No registry is reachable here: the base (Debian minbase + Node 20) is made locally, once per machine.
    const base = await localBaseImage();
    const ca = npmCaFile();
    await run(
      "podman",
      [
        "build",
        "--network",
        "host",
        ...(ca ? ["--secret", `id=npm-ca,src=${ca}`] : []),
        "--build-arg",
        `BASE=${base}`,
        "-f",
        "deploy/docker/Dockerfile",
        "-t",
        IMAGE,
        ".",
      ],
      { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
    );
    nats = await startNats();
  }, 600_000);

  afterAll(async () => {
    if (containers.length > 0) await run("podman", ["rm", "-f", "-t", "0", ...containers]).catch(() => undefined);
    await nats?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  it("is one image for every worker: an unprivileged user, toolbus as entrypoint, no HEALTHCHECK, labels, no dev dependency", async () => {
    const [image] = JSON.parse(await podman("image", "inspect", IMAGE)) as Array<{
      Config: { User: string; Entrypoint: string[]; Labels: Record<string, string>; Env: string[]; Healthcheck?: unknown };
    }>;
    expect(image!.Config.User).toBe("10001:10001");
    expect(image!.Config.Entrypoint).toEqual(["node", "/app/services/cli/bin/toolbus.js"]);
    expect(image!.Config.Healthcheck).toBeUndefined();
    expect(image!.Config.Labels).toMatchObject({ "org.opencontainers.image.title": "toolbus", "org.opencontainers.image.version": "0.1.0" });
    expect(image!.Config.Env).toContain("NODE_OPTIONS=--max-semi-space-size=2");
    expect((await podman("run", "--rm", "--network", "host", IMAGE, "--version")).trim()).toBe("0.1.0");
    const installed = (
      await podman("run", "--rm", "--network", "host", "--entrypoint", "sh", IMAGE, "-c", "ls node_modules node_modules/@types 2>/dev/null")
    ).split(/\s+/);
    expect(installed).toContain("nats");
    expect(installed).toContain("@modelcontextprotocol");
    for (const dev of ["typescript", "vitest", "eslint", "prettier", "tsx", "supergateway", "moleculer", "kubernetes-models", "node"])
      expect(installed).not.toContain(dev);
  });

  it("runs a router and a caller from the image against NATS: a call goes through them, readiness answers, SIGTERM drains and exits 0", async () => {
    const dir = tempDir("toolbus-container-");
    // The example's form: a stdio server from the image's own node_modules, relative to /app/config.
    writeFileSync(
      join(dir, "toolbus.yaml"),
      `backends:\n  everything:\n    kind: mcp-stdio\n    command: node\n    args: ["../node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"]\ncache: { enabled: false }\nchatLog: { enabled: false }\ngateway: { enabled: false }\n`,
    );
    const start = async (admin: number, ...args: string[]): Promise<string> => {
      const name = `toolbus-test-${randomBytes(4).toString("hex")}`;
      containers.push(name);
      await podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-v",
        `${join(dir, "toolbus.yaml")}:/app/config/toolbus.yaml:ro`,
        "-e",
        "TOOLBUS_CONFIG=/app/config/toolbus.yaml",
        "-e",
        `TOOLBUS_NATS_URL=${nats.url}`,
        "-e",
        `TOOLBUS_ADMIN_PORT=${admin}`,
        IMAGE,
        ...args,
      );
      return name;
    };
    const routerAdmin = await freePort();
    const callerAdmin = await freePort();
    const router = await start(routerAdmin, "worker", "router");
    const caller = await start(callerAdmin, "worker", "caller", "--backend", "everything");
    const client = await ToolbusClient.connect({ servers: nats.url });
    try {
      await waitForBackends(client, ["everything"], 60_000);
      const { result } = await client.callTool("everything", "echo", { message: "from a container" }, { timeoutMs: 10_000 });
      expect(result.content).toEqual([{ type: "text", text: "Echo: from a container" }]);
      await waitFor("the caller's readiness", async () => (await fetch(`http://127.0.0.1:${callerAdmin}/readyz`)).status === 200, 20_000);
      expect((await fetch(`http://127.0.0.1:${routerAdmin}/healthz`)).status).toBe(200);
    } finally {
      await client.close();
    }
    // What Kubernetes does to a pod: SIGTERM, then wait; the workers drain and exit 0 well before the kill.
    await podman("stop", "-t", "30", caller, router);
    for (const name of [caller, router]) expect((await podman("inspect", name, "--format", "{{.State.ExitCode}}")).trim()).toBe("0");
  }, 120_000);
});
