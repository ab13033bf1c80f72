import { pino, type Logger } from "pino";

export type { Logger } from "pino";

/** Paths whose values never reach a log line (credentials in configs, headers and errors). */
export const REDACT_PATHS = [
  "pass",
  "password",
  "token",
  "apiKey",
  "authorization",
  "*.pass",
  "*.password",
  "*.token",
  "*.apiKey",
  "*.authorization",
  "*.Authorization",
  "headers.*",
  "*.headers.*",
  "nats.*.pass",
  "nats.*.token",
];

export interface LoggerOptions {
  level?: string;
  /** Worker or command name, on every line. */
  name?: string;
  /** Human-friendly output (for a terminal); JSON lines otherwise. */
  pretty?: boolean;
  /** Where lines go; stdout by default. */
  destination?: NodeJS.WritableStream;
}

/**
 * The logger every worker uses: JSON lines, secrets redacted. Per-request lines come from
 * `logger.child({ requestId })` so the request id is on every line about it.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const base = { level: options.level ?? "info", name: options.name, redact: { paths: REDACT_PATHS, censor: "[redacted]" } };
  if (options.pretty) {
    return pino({
      ...base,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname", singleLine: true } },
    });
  }
  return options.destination ? pino(base, options.destination as pino.DestinationStream) : pino(base);
}
