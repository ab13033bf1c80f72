import { readFileSync } from "node:fs";
import { credsAuthenticator, type Authenticator, type ConnectionOptions } from "nats";

/** Where and how to connect to NATS: what a toolbus config's `nats` section holds, plus a name. */
export interface NatsConnectionSettings {
  /** NATS URL(s). */
  servers: string | readonly string[];
  /** Connection name, shown by `nats server report connections`. */
  name: string;
  user?: string;
  pass?: string;
  token?: string;
  /** Path of a NATS .creds file (user JWT and nkey seed). */
  credsFile?: string;
}

/** A NATS .creds file that cannot be read or is not one; `path` names it. */
export class NatsCredsError extends Error {
  override name = "NatsCredsError";
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isNatsCredsError(err: unknown): err is NatsCredsError {
  return err instanceof Error && err.name === "NatsCredsError";
}

/**
 * The NATS connection options of every toolbus connection, workers and clients alike: credentials,
 * reconnect forever with jitter, a ping every 10 s, no async stack traces. Throws NatsCredsError when
 * `credsFile` cannot be read or parsed.
 */
export function toolbusConnectionOptions(settings: NatsConnectionSettings): ConnectionOptions {
  return {
    servers: typeof settings.servers === "string" ? settings.servers : [...settings.servers],
    name: settings.name,
    user: settings.user,
    pass: settings.pass,
    token: settings.token,
    authenticator: settings.credsFile === undefined ? undefined : readCreds(settings.credsFile),
    // Survive any NATS outage: reconnect forever, quickly, without every client retrying in step.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    // Notice a dead server in ~20 s (two missed pings) rather than the default 4 minutes.
    pingInterval: 10_000,
    // nats.js builds an Error per request() for async stack traces: a third of a client's CPU per call.
    noAsyncTraces: true,
  };
}

function readCreds(path: string): Authenticator {
  let creds: Uint8Array;
  try {
    creds = readFileSync(path);
  } catch (err) {
    throw new NatsCredsError(path, `cannot read the NATS creds file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    });
  }
  const authenticator = credsAuthenticator(creds);
  // nats.js parses the file only when it connects; parse it now so a bad file is named, not "bad creds".
  try {
    authenticator(undefined);
  } catch (err) {
    throw new NatsCredsError(path, `${path} is not a NATS creds file (a user JWT and an nkey seed): ${(err as Error).message}`, { cause: err });
  }
  return authenticator;
}
