import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from "nats";
import type { ToolbusConfig } from "@toolbus/config";
import type { Logger } from "./logger.js";

export interface NatsOptions {
  /** Connection name, shown by `nats server report connections`. */
  name: string;
  logger: Logger;
  /** Keep trying the first connect instead of failing (a pod that starts before NATS). */
  waitOnFirstConnect?: boolean;
}

/** Connection options shared by workers and the client: reconnect forever, no async stack traces. */
export function natsConnectionOptions(nats: ToolbusConfig["nats"], name: string): ConnectionOptions {
  return {
    servers: [...nats.servers],
    name,
    user: nats.user,
    pass: nats.pass,
    token: nats.token,
    authenticator: nats.credsFile ? credsAuthenticator(readFileSync(nats.credsFile)) : undefined,
    // A worker must survive any NATS outage: reconnect forever, quickly.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 10_000,
    // nats.js builds an Error per request() for async stack traces: a third of a client's CPU per call.
    noAsyncTraces: true,
  };
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
