import { connect, type ConnectionOptions, type NatsConnection } from "nats";
import { toolbusConnectionOptions } from "@toolbus/client";
import type { ToolbusConfig } from "@toolbus/config";
import type { Logger } from "./logger.js";

export interface NatsOptions {
  /** Connection name, shown by `nats server report connections`. */
  name: string;
  logger: Logger;
  /** Keep trying the first connect instead of failing (a pod that starts before NATS). */
  waitOnFirstConnect?: boolean;
}

/**
 * The connection options of a worker: those of every toolbus connection (`toolbusConnectionOptions`
 * of @toolbus/client), from the config's `nats` section. Throws NatsCredsError for an unreadable creds file.
 */
export function natsConnectionOptions(nats: ToolbusConfig["nats"], name: string): ConnectionOptions {
  return toolbusConnectionOptions({ ...nats, name });
}

/** Connect a worker to NATS and log every disconnect and reconnect. */
export async function connectNats(nats: ToolbusConfig["nats"], options: NatsOptions): Promise<NatsConnection> {
  const log = options.logger;
  const nc = await connect({ ...natsConnectionOptions(nats, options.name), waitOnFirstConnect: options.waitOnFirstConnect ?? false });
  log.info({ server: nc.getServer() }, "connected to NATS");
  void (async () => {
    for await (const status of nc.status()) {
      switch (status.type) {
        case "disconnect":
          log.warn({ server: status.data }, "disconnected from NATS; reconnecting");
          break;
        case "reconnect":
          log.info({ server: status.data }, "reconnected to NATS");
          break;
        case "error":
          log.error({ err: status.data }, "NATS connection error");
          break;
        default:
          log.debug({ status: status.type, data: status.data }, "NATS status");
      }
    }
  })();
  return nc;
}
