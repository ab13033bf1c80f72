import type { NatsConnection, RequestManyOptions } from "nats";

/**
 * Requests each running instance of `service` took over NATS, on the endpoints `pick` selects, one count
 * per instance ($SRV.STATS, the NATS services API). A request handed over in-process is not counted.
 */
export async function servedByInstance(
  nc: NatsConnection,
  service: string,
  pick: (endpoint: { name: string; subject: string }) => boolean,
  options?: RequestManyOptions,
): Promise<number[]> {
  const counts: number[] = [];
  for await (const s of await nc.services.client(options).stats(service)) {
    counts.push((s.endpoints ?? []).filter(pick).reduce((n, e) => n + e.num_requests, 0));
  }
  return counts;
}
