import { createHash } from "node:crypto";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { canonicalJson, type ToolDescriptor, type ValidationIssue } from "@toolbus/protocol";

export type ArgumentCheck = { ok: true } | { ok: false; issues: ValidationIssue[] };

/** Hash of a tool list; equal lists give equal versions whatever the key order. */
export function toolsVersion(tools: readonly ToolDescriptor[]): string {
  return createHash("sha256").update(canonicalJson(tools)).digest("hex").slice(0, 16);
}

function issueFromAjv(error: ErrorObject): ValidationIssue {
  // "/a/0/b" → "arguments.a.0.b"; a missing property is named by itself, not by its parent.
  const pointer = error.instancePath
    .split("/")
    .filter(Boolean)
    .map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (error.keyword === "required") pointer.push(String((error.params as { missingProperty: string }).missingProperty));
  if (error.keyword === "additionalProperties") pointer.push(String((error.params as { additionalProperty: string }).additionalProperty));
  return { field: ["arguments", ...pointer].join("."), message: error.message ?? "is invalid", type: error.keyword };
}

/**
 * The tools of one backend, with their input schemas compiled once (ajv) so a call's arguments are
 * checked in microseconds. A schema ajv cannot compile is not enforced here; the backend still checks.
 */
export class ToolIndex {
  readonly version: string;
  readonly tools: readonly ToolDescriptor[];
  #byName: Map<string, ToolDescriptor>;
  #validators = new Map<string, ValidateFunction | null>();
  #ajv: Ajv2020;

  constructor(tools: readonly ToolDescriptor[]) {
    this.tools = tools;
    this.version = toolsVersion(tools);
    this.#byName = new Map(tools.map((t) => [t.name, t]));
    this.#ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });
  }

  get names(): string[] {
    return [...this.#byName.keys()];
  }

  get(name: string): ToolDescriptor | undefined {
    return this.#byName.get(name);
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** Check `args` against the tool's input schema. The tool must exist (see `has`). */
  check(name: string, args: Record<string, unknown>): ArgumentCheck {
    const validate = this.#validator(name);
    if (!validate || validate(args)) return { ok: true };
    return { ok: false, issues: (validate.errors ?? []).map(issueFromAjv) };
  }

  #validator(name: string): ValidateFunction | null {
    let validate = this.#validators.get(name);
    if (validate === undefined) {
      const tool = this.#byName.get(name);
      validate = null;
      if (tool) {
        // Servers declare draft-07 or 2020-12; the keywords tools use mean the same in both, and a
        // $schema naming a meta-schema ajv has not loaded would make compile() throw.
        const { $schema: _ignored, ...schema } = tool.inputSchema as Record<string, unknown>;
        try {
          validate = this.#ajv.compile(schema);
        } catch {
          validate = null;
        }
      }
      this.#validators.set(name, validate);
    }
    return validate;
  }
}
