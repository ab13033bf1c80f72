import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface AdminServerOptions {
  port: number;
  host: string;
  registry: Registry;
  /** Returns the reasons the process is not ready; empty when it is. */
  notReady: () => string[];
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * `/healthz` (the process is alive), `/readyz` (connected and serving; 503 with the reasons
 * otherwise) and `/metrics` (Prometheus). Kubernetes probes point here.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const reasons = options.notReady();
      res.writeHead(reasons.length === 0 ? 200 : 503, { "content-type": "text/plain" }).end(reasons.length === 0 ? "ready\n" : `${reasons.join("\n")}\n`);
    } else if (path === "/metrics") {
      options.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": options.registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("try /healthz, /readyz or /metrics\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
