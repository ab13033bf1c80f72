import type { NatsConnection, Service } from "nats";

export type { Service, ServiceMsg } from "nats";

export interface ServiceOptions {
  /** Service name for `$SRV.PING|INFO|STATS.<name>` (letters, digits, '-' and '_'). */
  name: string;
  version: string;
  description: string;
  workerId: string;
  metadata?: Record<string, string>;
}

/** Register with the NATS services API, so `nats micro ls` / `$SRV.*` discover and describe the worker. */
export async function addService(nc: NatsConnection, options: ServiceOptions): Promise<Service> {
  return nc.services.add({
    name: options.name,
    version: options.version,
    description: options.description,
    metadata: { workerId: options.workerId, ...options.metadata },
  });
}
