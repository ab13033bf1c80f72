import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { StartedTestContainer } from "testcontainers";
import { isListening } from "@toolbus/cli";
import { freePort } from "./mcp.js";
import type { TestNats, TestNatsCluster } from "./nats-server.js";
import { ROOT } from "./paths.js";

const run = promisify(execFile);

/** Whether podman is installed (deploy/docker/setup-podman.sh installs it; CI requires it: TOOLBUS_REQUIRE_CONTAINERS=1). */
export const hasPodman = ((): boolean => {
  try {
    execFileSync("podman", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

export const containersRequired = process.env.TOOLBUS_REQUIRE_CONTAINERS === "1";

/** Answers when the Docker-compatible API on `socket` does. */
function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: "/_ping", timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

let service: { child: ChildProcess; dir: string } | undefined;

/**
 * Point testcontainers at podman's Docker-compatible API: a `podman system service` of the test's own on a
 * socket in a temp dir (stopped by `stopContainerRuntime`), and no Ryuk reaper (its image cannot be
 * pulled here; the tests remove what they start).
 */
export async function useContainerRuntime(): Promise<void> {
  if (service) return;
  const dir = mkdtempSync(join(tmpdir(), "toolbus-test-podman-"));
  const socket = join(dir, "podman.sock");
  const child = spawn("podman", ["system", "service", "--time=0", `unix://${socket}`], { stdio: "ignore" });
  service = { child, dir };
  for (let i = 0; i < 100 && !(existsSync(socket) && (await ping(socket))); i++) await new Promise((r) => setTimeout(r, 100));
  if (!(await ping(socket))) {
    await stopContainerRuntime();
    throw new Error("podman system service did not answer on its socket");
  }
  process.env.DOCKER_HOST = `unix://${socket}`;
  process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
}

export async function stopContainerRuntime(): Promise<void> {
  if (!service) return;
  const { child, dir } = service;
  service = undefined;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
}

/** The Node 20 base image made on this machine (deploy/docker/make-base.sh: once, then its tag). */
export async function localBaseImage(): Promise<string> {
  return (await run("bash", [join(ROOT, "deploy/docker/make-base.sh")], { maxBuffer: 16 * 1024 * 1024 })).stdout.trim().split("\n").at(-1)!;
}

/**
 * A NATS image built here (no registry answers): the locally made Node base (deploy/docker/make-base.sh)
 * plus this machine's nats-server binary. Built once per machine and nats-server version.
 */
export async function natsImage(): Promise<string> {
  const binary = (await run("sh", ["-c", "command -v nats-server"])).stdout.trim();
  const version = (await run(binary, ["--version"])).stdout.trim().replace(/^nats-server:\s*v?/, "");
  const tag = `localhost/toolbus-nats:${version}`;
  const exists = await run("podman", ["image", "exists", tag]).then(
    () => true,
    () => false,
  );
  if (exists) return tag;
  const base = await localBaseImage();
  const context = mkdtempSync(join(tmpdir(), "toolbus-test-nats-image-"));
  try {
    copyFileSync(binary, join(context, "nats-server"));
    writeFileSync(join(context, "Containerfile"), `FROM ${base}\nCOPY nats-server /usr/local/bin/nats-server\nENTRYPOINT ["/usr/local/bin/nats-server"]\n`);
    await run("podman", ["build", "-t", tag, context], { maxBuffer: 16 * 1024 * 1024 });
  } finally {
    rmSync(context, { recursive: true, force: true });
  }
  return tag;
}

/** Until something accepts connections on 127.0.0.1:`port`. */
async function listening(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await isListening("127.0.0.1", port, 200))) {
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The same cluster as startNatsCluster, with each node a container started by testcontainers (host
 * network, a port of its own): kill is `podman kill -s KILL`, start is `podman start` of the same
 * container, so its JetStream store survives as a node's disk would.
 */
export async function startNatsClusterInContainers(size = 3): Promise<TestNatsCluster> {
  await useContainerRuntime();
  const image = await natsImage();
  const { GenericContainer, Wait } = await import("testcontainers");
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const started: StartedTestContainer[] = [];
  try {
    await Promise.all(
      clientPorts.map(async (port, i) => {
        const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`);
        started[i] = await new GenericContainer(image)
          .withNetworkMode("host")
          .withCommand([
            ...["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", "/tmp/jetstream"],
            ...["--server_name", `n${i}`, "--cluster_name", "toolbus-test", "--cluster", `nats://127.0.0.1:${routePorts[i]}`, "--routes", routes.join(",")],
          ])
          .withWaitStrategy(Wait.forLogMessage(/Listening for client connections/))
          .start();
      }),
    );
  } catch (err) {
    await Promise.all(started.filter(Boolean).map((c) => c.stop().catch(() => undefined)));
    throw err;
  }
  const nodes: TestNats[] = started.map((container, i) => ({
    url: `nats://127.0.0.1:${clientPorts[i]}`,
    port: clientPorts[i]!,
    stop: async () => void (await run("podman", ["stop", "-t", "10", container.getId()])),
    start: async () => {
      await run("podman", ["start", container.getId()]);
      await listening(clientPorts[i]!, 20_000);
    },
    [Symbol.asyncDispose]: async () => void (await container.stop({ remove: true }).catch(() => undefined)),
  }));
  return {
    urls: nodes.map((n) => n.url).join(","),
    nodes,
    nodeOn: (port) => nodes.find((n) => n.port === port)!,
    kill: async (i) => void (await run("podman", ["kill", "-s", "KILL", started[i]!.getId()])),
    [Symbol.asyncDispose]: async () => {
      await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
    },
  };
}
