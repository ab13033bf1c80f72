import { inspect } from "node:util";

const REDACTED = "[redacted]";

/**
 * A credential from the environment or a file, read when first used: a process that does not call the
 * backend (a router, `toolbus chat` on a laptop) needs no copy of it. It never prints: JSON, string conversion and
 * `util.inspect` (console.log, pino) all give "[redacted]"; only `reveal()` gives the value, at the
 * one place that puts it in a request header.
 */
export class Secret {
  #value: string | undefined;
  readonly #read: () => string;
  /** Where it comes from, for messages: `env OPENAI_API_KEY` or `file /run/secrets/openai`. */
  readonly source: string;

  /** `read` gives the value, or throws saying why it cannot (read once, on first use). */
  constructor(source: string, read: () => string) {
    this.source = source;
    this.#read = read;
  }

  /** The value; throws when it cannot be read (a variable not set, a file missing or empty). */
  reveal(): string {
    this.#value ??= this.#read();
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
