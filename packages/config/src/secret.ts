import { inspect } from "node:util";

const REDACTED = "[redacted]";

/**
 * A credential read from the environment or a file. It never prints: JSON, string conversion and
 * `util.inspect` (console.log, pino) all give "[redacted]"; only `reveal()` gives the value, at the
 * one place that puts it in a request header.
 */
export class Secret {
  readonly #value: string;
  /** Where it came from, for messages: `env OPENAI_API_KEY` or `file /run/secrets/openai`. */
  readonly source: string;

  constructor(value: string, source: string) {
    this.#value = value;
    this.source = source;
  }

  reveal(): string {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `Secret(${this.source}) ${REDACTED}`;
  }
}
