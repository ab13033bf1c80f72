/** How the front door names a backend's tools (and prompts) in the union it serves. */
export interface NamingOptions {
  /** `always`: `<backend><separator><name>`; `on-clash`: only names two backends share; `never`. */
  readonly prefix: "always" | "on-clash" | "never";
  readonly separator: string;
  /** The prefix to use for a backend instead of its name. */
  readonly aliases: Readonly<Record<string, string>>;
}

/** One item of the union: its name there, and where it comes from. */
export interface Named<T> {
  readonly name: string;
  readonly backend: string;
  /** Its name at the backend. */
  readonly original: string;
  readonly item: T;
}

/**
 * Name each backend's items for the union. Backends are taken in name order, so the outcome does not
 * depend on which answered first; a name already taken (with `never`, or a prefixed name that happens to
 * equal another) keeps its first owner and the other is reported through `onDropped`.
 */
export function nameUnion<T extends { readonly name: string }>(
  byBackend: ReadonlyMap<string, readonly T[]>,
  options: NamingOptions,
  onDropped: (name: string, backend: string, keptFrom: string) => void = () => undefined,
): Map<string, Named<T>> {
  const backends = [...byBackend.keys()].sort();
  const owners = new Map<string, number>();
  if (options.prefix === "on-clash") {
    for (const b of backends) for (const name of new Set(byBackend.get(b)!.map((i) => i.name))) owners.set(name, (owners.get(name) ?? 0) + 1);
  }
  const union = new Map<string, Named<T>>();
  for (const backend of backends) {
    const prefix = `${options.aliases[backend] ?? backend}${options.separator}`;
    for (const item of byBackend.get(backend)!) {
      const prefixed = options.prefix === "always" || (options.prefix === "on-clash" && owners.get(item.name)! > 1);
      const name = prefixed ? prefix + item.name : item.name;
      const taken = union.get(name);
      if (taken) {
        onDropped(name, backend, taken.backend);
        continue;
      }
      union.set(name, { name, backend, original: item.name, item });
    }
  }
  return union;
}
