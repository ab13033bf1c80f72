import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { isMap, parseDocument, stringify } from "yaml";
import { compileConfig, isLlmBackend, type BackendConfig, type Secret, type ToolbusConfig } from "@toolbus/config";
import { natsPermissions, natsUserOf, type NatsRole } from "@toolbus/protocol";
import { TOOLBUS_VERSION } from "@toolbus/runtime";

/**
 * `toolbus deploy render`: Kubernetes objects for every worker, made from a toolbus.yaml, so that adding
 * a backend to the config is all it takes to deploy its callers. The output is a kustomize base (the
 * overlays in deploy/k8s add the NATS cluster and size it for dev or prod).
 */

/**
 * Where a pod keeps the config: one level below the install (/app), as examples/ is below the repository,
 * so a config's relative paths (`../node_modules/...`) mean the same inside the image as in a checkout.
 */
export const POD_CONFIG_DIR = "/app/config";
const POD_CONFIG = `${POD_CONFIG_DIR}/toolbus.yaml`;
/** Seconds a stopping pod waits before SIGTERM, so Services and clients stop sending to it first. */
const PRESTOP_SECONDS = 5;
/** The variable (in Secret toolbus-secrets) of the bearer token the front door requires in a cluster when the config names none. */
export const GATEWAY_TOKEN_ENV = "TOOLBUS_GATEWAY_TOKEN";
export const SECRETS = "toolbus-secrets";

/**
 * Memory, from RSS measured here: one worker alone is 70-83 MB with --max-semi-space-size=2 (the image
 * sets it); a Node MCP server child (server-everything over stdio) 45-60 MB. A caller's request adds one
 * child per stdio connection and per server it launches.
 */
const WORKER_MEMORY_MIB = 96;
const CHILD_MEMORY_MIB = 64;

export interface RenderOptions {
  /** The container image; overlays may replace it (kustomize `images`). */
  image?: string;
  /** NATS as the workers reach it inside the cluster. */
  natsUrl?: string;
}

/** The files of the kustomize base, by name. */
export type RenderedBase = Record<"kustomization.yaml" | "toolbus.yaml" | "workers.yaml" | "nats-auth.conf", string>;

type K8sObject = Record<string, unknown> & { kind: string; metadata: { name: string; labels?: Record<string, string> } };

interface WorkerSpec {
  /** Deployment name: toolbus-<id>. */
  id: string;
  /** The worker kind: its `app.kubernetes.io/component` label and (with `backend`, for a caller) its NATS user. */
  component: Exclude<NatsRole["kind"], "client">;
  args: string[];
  replicas: number;
  memoryMiB: number;
  env?: Array<Record<string, unknown>>;
  ports?: Array<{ name: string; containerPort: number }>;
  volumes?: Array<Record<string, unknown>>;
  mounts?: Array<Record<string, unknown>>;
  backend?: string;
  /** One pod at a time (a volume only one pod may mount). */
  recreate?: boolean;
  autoscale?: boolean;
}

/** Render the kustomize base for the config in `file`. */
export function renderBase(file: string, options: RenderOptions = {}): RenderedBase {
  const text = readFileSync(file, "utf8");
  const clusterText = clusterConfigText(text);
  // Compiled as a pod sees it: relative paths from POD_CONFIG_DIR, secrets not read (they live in the cluster).
  const config = compileConfig(parseDocument(clusterText).toJS() ?? {}, { baseDir: POD_CONFIG_DIR, source: POD_CONFIG, env: {}, checkSecrets: false });
  const objects = renderObjects(config, { image: options.image ?? `toolbus:${TOOLBUS_VERSION}`, natsUrl: options.natsUrl ?? "nats://nats:4222" });
  const kustomization = {
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    resources: ["workers.yaml"],
    configMapGenerator: [
      { name: "toolbus-config", files: ["toolbus.yaml"] },
      // Included by the NATS server's config (deploy/k8s/nats): a user per worker, with its subjects.
      { name: "toolbus-nats-auth", files: ["nats-auth.conf"] },
    ],
  };
  return {
    "kustomization.yaml": `${HEADER(file)}${stringify(kustomization)}`,
    "toolbus.yaml": clusterText,
    "workers.yaml": HEADER(file) + objects.map((o) => stringify(o, { lineWidth: 0 })).join("---\n"),
    "nats-auth.conf": HEADER(file) + natsAuthConfig(rolesOf(config)),
  };
}

/** Every NATS user the workers of `config` connect as, and a client user for applications. */
export function rolesOf(config: ToolbusConfig): NatsRole[] {
  const roles: NatsRole[] = [{ kind: "router" }, { kind: "health-prober" }, { kind: "client" }];
  if (config.cache.enabled) roles.push({ kind: "cache" });
  if (config.chatLog.enabled) roles.push({ kind: "chat-log-writer" });
  if (config.gateway.enabled) roles.push({ kind: "gateway" });
  for (const b of Object.values(config.backends)) roles.push({ kind: "caller", backend: b.name, fallbacks: isLlmBackend(b) ? b.fallbacks : [] });
  return roles;
}

/** The environment variable (in Secret toolbus-nats-users) holding a NATS user's password. */
export const natsPasswordEnv = (user: string): string => `TOOLBUS_NATS_PASS_${user.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;

/**
 * nats-server `authorization` users, one per role, each with the subjects it may publish and subscribe
 * to. Passwords are the server's environment variables ($TOOLBUS_NATS_PASS_<USER>), never in the file.
 */
export function natsAuthConfig(roles: readonly NatsRole[]): string {
  const list = (subjects: readonly string[]): string => `[${subjects.map((s) => JSON.stringify(s)).join(", ")}]`;
  const users = roles.map((role) => {
    const user = natsUserOf(role);
    const p = natsPermissions(role);
    return `    {\n      user: ${JSON.stringify(user)}\n      password: $${natsPasswordEnv(user)}\n      permissions: {\n        publish: { allow: ${list(p.publish)} }\n        subscribe: { allow: ${list(p.subscribe)} }\n      }\n    }`;
  });
  const create = roles.map((r) => `--from-literal=${natsPasswordEnv(natsUserOf(r))}=p$(openssl rand -hex 24)`).join(" \\\n#     ");
  return `# Passwords: Secret toolbus-nats-users, in the NATS pods' environment and each worker's. Each must start
# with a letter (nats-server parses a variable's value: "7e3..." would not be a string). Create it once:
#   kubectl -n toolbus create secret generic toolbus-nats-users \\
#     ${create}
authorization {
  users: [
${users.join("\n")}
  ]
}
`;
}

/** The base as one manifest for `kubectl apply -f -`: the config and the NATS users as ConfigMaps, then every object. */
export function manifestOf(base: RenderedBase): string {
  const configMap = (name: string, file: "toolbus.yaml" | "nats-auth.conf"): string =>
    stringify(
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name, labels: labelsOf(undefined, undefined) }, data: { [file]: base[file] } },
      { lineWidth: 0 },
    );
  return `${configMap("toolbus-config", "toolbus.yaml")}---\n${configMap("toolbus-nats-auth", "nats-auth.conf")}---\n${base["workers.yaml"]}`;
}

const HEADER = (file: string): string =>
  `# Made by \`toolbus deploy render --config ${relative(process.cwd(), file) || file}\`; render again after changing the config.\n`;

/**
 * The config as a cluster runs it: the front door listens on every interface, which toolbus allows only
 * with bearer tokens, so a config without tokens gets one read from Secret toolbus-secrets. The rest of
 * the differences come from the environment (NATS URL, admin host, profile). Comments are kept.
 */
function clusterConfigText(text: string): string {
  const doc = parseDocument(text);
  if (!isMap(doc.contents)) throw new Error("the config is not a YAML mapping");
  doc.setIn(["gateway", "host"], "0.0.0.0");
  const tokens = doc.getIn(["gateway", "tokens"]) as { items?: unknown[] } | undefined;
  if (!tokens?.items?.length) doc.setIn(["gateway", "tokens"], doc.createNode([{ name: "cluster", token: { env: GATEWAY_TOKEN_ENV }, backends: ["*"] }]));
  return doc.toString({ lineWidth: 0 });
}

function renderObjects(config: ToolbusConfig, o: Required<RenderOptions>): K8sObject[] {
  const adminPort = config.admin.port > 0 ? config.admin.port : 9464;
  const graceSeconds = Math.ceil(config.shutdownGraceMs / 1000) + PRESTOP_SECONDS + 5;
  const env = (extra: Array<Record<string, unknown>> = []): Array<Record<string, unknown>> => [
    { name: "TOOLBUS_CONFIG", value: POD_CONFIG },
    { name: "TOOLBUS_NATS_URL", value: o.natsUrl },
    { name: "TOOLBUS_ADMIN_HOST", value: "0.0.0.0" },
    { name: "TOOLBUS_ADMIN_PORT", value: String(adminPort) },
    { name: "TOOLBUS_PROFILE", value: "cloud" },
    ...extra,
  ];

  const deployment = (w: WorkerSpec): K8sObject[] => {
    const labels = labelsOf(w.component, w.backend);
    // Its own NATS user, whose subjects nats-auth.conf lists; the Secret is optional (a NATS without authorization ignores it).
    const user = natsUserOf(w.component === "caller" ? { kind: "caller", backend: w.backend! } : { kind: w.component });
    const natsUser = [
      { name: "TOOLBUS_NATS_USER", value: user },
      { name: "TOOLBUS_NATS_PASS", valueFrom: { secretKeyRef: { name: "toolbus-nats-users", key: natsPasswordEnv(user), optional: true } } },
    ];
    const memory = `${w.memoryMiB}Mi`;
    const objects: K8sObject[] = [
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: `toolbus-${w.id}`, labels },
        spec: {
          replicas: w.replicas,
          selector: { matchLabels: selectorOf(w.component, w.backend) },
          ...(w.recreate ? { strategy: { type: "Recreate" } } : {}),
          template: {
            metadata: { labels },
            spec: {
              serviceAccountName: "toolbus",
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: graceSeconds,
              securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: "RuntimeDefault" } },
              containers: [
                {
                  name: "toolbus",
                  image: o.image,
                  args: w.args,
                  env: env([...natsUser, ...(w.env ?? [])]),
                  ports: [{ name: "admin", containerPort: adminPort }, ...(w.ports ?? [])],
                  startupProbe: { httpGet: { path: "/healthz", port: "admin" }, periodSeconds: 2, failureThreshold: 30 },
                  livenessProbe: { httpGet: { path: "/healthz", port: "admin" }, periodSeconds: 10, failureThreshold: 3 },
                  readinessProbe: { httpGet: { path: "/readyz", port: "admin" }, periodSeconds: 5, failureThreshold: 2 },
                  // SIGTERM comes after this: endpoints and clients move away while the pod still serves.
                  lifecycle: { preStop: { exec: { command: ["sleep", String(PRESTOP_SECONDS)] } } },
                  // A memory limit and no CPU limit: throttling would show as latency on every call.
                  resources: { requests: { cpu: "100m", memory }, limits: { memory: `${Math.max(256, w.memoryMiB * 2)}Mi` } },
                  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } },
                  volumeMounts: [
                    { name: "config", mountPath: POD_CONFIG, subPath: "toolbus.yaml", readOnly: true },
                    { name: "tmp", mountPath: "/tmp" },
                    ...(w.mounts ?? []),
                  ],
                },
              ],
              volumes: [{ name: "config", configMap: { name: "toolbus-config" } }, { name: "tmp", emptyDir: {} }, ...(w.volumes ?? [])],
            },
          },
        },
      },
      {
        apiVersion: "policy/v1",
        kind: "PodDisruptionBudget",
        metadata: { name: `toolbus-${w.id}`, labels },
        spec: { maxUnavailable: 1, selector: { matchLabels: selectorOf(w.component, w.backend) } },
      },
    ];
    if (w.autoscale) {
      objects.push({
        apiVersion: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        metadata: { name: `toolbus-${w.id}`, labels },
        spec: {
          scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: `toolbus-${w.id}` },
          minReplicas: w.replicas,
          maxReplicas: 10,
          metrics: [{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } } }],
        },
      });
    }
    return objects;
  };

  const workers: WorkerSpec[] = [{ id: "router", component: "router", args: ["worker", "router"], replicas: 2, memoryMiB: WORKER_MEMORY_MIB, autoscale: true }];
  if (config.cache.enabled) workers.push({ id: "cache", component: "cache", args: ["worker", "cache"], replicas: 2, memoryMiB: WORKER_MEMORY_MIB + 64 });
  workers.push({ id: "health-prober", component: "health-prober", args: ["worker", "health-prober"], replicas: 1, memoryMiB: WORKER_MEMORY_MIB });
  if (config.chatLog.enabled) {
    workers.push({
      id: "chat-log-writer",
      component: "chat-log-writer",
      args: ["worker", "chat-log-writer"],
      // Several writers share one directory safely, but only on storage that several pods can mount (ReadWriteMany).
      replicas: 1,
      recreate: true,
      memoryMiB: WORKER_MEMORY_MIB,
      volumes: [{ name: "chat-logs", persistentVolumeClaim: { claimName: "toolbus-chat-logs" } }],
      mounts: [{ name: "chat-logs", mountPath: config.chatLog.dir }],
    });
  }
  if (config.gateway.enabled) {
    workers.push({
      id: "gateway",
      component: "gateway",
      args: ["worker", "gateway"],
      replicas: 2,
      memoryMiB: WORKER_MEMORY_MIB,
      ports: [{ name: "mcp", containerPort: config.gateway.port }],
      env: secretEnv(config.gateway.tokens.map((t) => t.token)),
    });
  }
  for (const backend of Object.values(config.backends)) {
    workers.push({
      id: `caller-${backend.name}`,
      component: "caller",
      backend: backend.name,
      args: ["worker", "caller", "--backend", backend.name],
      replicas: 2,
      memoryMiB: WORKER_MEMORY_MIB + CHILD_MEMORY_MIB * childrenOf(backend),
      env: secretEnv(isLlmBackend(backend) && backend.apiKey ? [backend.apiKey] : []),
      autoscale: true,
    });
  }

  const common = labelsOf(undefined, undefined);
  const objects: K8sObject[] = [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "toolbus", labels: common }, automountServiceAccountToken: false },
    ...workers.flatMap(deployment),
    // Every worker's admin port, for Prometheus (through the ServiceMonitor).
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "toolbus-metrics", labels: { ...common, "toolbus.io/metrics": "true" } },
      spec: { clusterIP: "None", selector: { "app.kubernetes.io/name": "toolbus" }, ports: [{ name: "admin", port: adminPort, targetPort: "admin" }] },
    },
    {
      apiVersion: "monitoring.coreos.com/v1",
      kind: "ServiceMonitor",
      metadata: { name: "toolbus", labels: common },
      spec: { selector: { matchLabels: { "toolbus.io/metrics": "true" } }, endpoints: [{ port: "admin", path: "/metrics", interval: "15s" }] },
    },
    ...networkPolicies(config, adminPort),
  ];
  if (config.gateway.enabled) {
    objects.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "toolbus-gateway", labels: labelsOf("gateway", undefined) },
      spec: { selector: selectorOf("gateway", undefined), ports: [{ name: "mcp", port: config.gateway.port, targetPort: "mcp" }] },
    });
  }
  if (config.chatLog.enabled) {
    objects.push({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: "toolbus-chat-logs", labels: labelsOf("chat-log-writer", undefined) },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "10Gi" } } },
    });
  }
  return objects;
}

/**
 * Workers talk to NATS (and DNS) only; a caller also to its backend's port; the front door takes MCP
 * clients; Prometheus and the kubelet reach the admin port. Policies add up, so each is one rule.
 */
function networkPolicies(config: ToolbusConfig, adminPort: number): K8sObject[] {
  const common = labelsOf(undefined, undefined);
  const policies: K8sObject[] = [
    {
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "toolbus-workers", labels: common },
      spec: {
        podSelector: { matchLabels: { "app.kubernetes.io/name": "toolbus" } },
        policyTypes: ["Ingress", "Egress"],
        ingress: [{ ports: [{ protocol: "TCP", port: adminPort }] }],
        egress: [
          { to: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "nats" } } }], ports: [{ protocol: "TCP", port: 4222 }] },
          {
            ports: [
              { protocol: "UDP", port: 53 },
              { protocol: "TCP", port: 53 },
            ],
          },
        ],
      },
    },
  ];
  if (config.gateway.enabled) {
    policies.push({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "toolbus-gateway", labels: common },
      spec: {
        podSelector: { matchLabels: selectorOf("gateway", undefined) },
        policyTypes: ["Ingress"],
        ingress: [{ ports: [{ protocol: "TCP", port: config.gateway.port }] }],
      },
    });
  }
  for (const backend of Object.values(config.backends)) {
    // A stdio backend runs inside the pod; a launched server listens on the pod's own loopback.
    const urls = backend.kind === "mcp-stdio" || backend.launch ? [] : backend.urls.map((u) => new URL(u));
    const ports = [...new Set(urls.map((u) => Number(u.port || (u.protocol === "https:" ? 443 : 80))))];
    if (ports.length === 0) continue;
    policies.push({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: `toolbus-caller-${backend.name}`, labels: common },
      spec: {
        podSelector: { matchLabels: selectorOf("caller", backend.name) },
        policyTypes: ["Egress"],
        egress: [{ ports: ports.map((port) => ({ protocol: "TCP", port })) }],
      },
    });
  }
  return policies;
}

/** Child processes a caller of `backend` runs: a stdio server per pooled connection, one launched server. */
function childrenOf(backend: BackendConfig): number {
  return backend.kind === "mcp-stdio" ? backend.pool : backend.launch ? 1 : 0;
}

/** Environment variables for secrets read from the environment, each from Secret toolbus-secrets. */
function secretEnv(secrets: readonly Secret[]): Array<Record<string, unknown>> {
  const names = secrets.map((s) => /^env (\S+)$/.exec(s.source)?.[1]).filter((n): n is string => n !== undefined);
  return [...new Set(names)].map((name) => ({ name, valueFrom: { secretKeyRef: { name: SECRETS, key: name } } }));
}

function labelsOf(component: string | undefined, backend: string | undefined): Record<string, string> {
  return {
    "app.kubernetes.io/name": "toolbus",
    "app.kubernetes.io/part-of": "toolbus",
    "app.kubernetes.io/version": TOOLBUS_VERSION,
    ...(component ? { "app.kubernetes.io/component": component } : {}),
    ...(backend ? { "toolbus.io/backend": backend } : {}),
  };
}

function selectorOf(component: string, backend: string | undefined): Record<string, string> {
  return { "app.kubernetes.io/name": "toolbus", "app.kubernetes.io/component": component, ...(backend ? { "toolbus.io/backend": backend } : {}) };
}
