/**
 * `http://user:secret@host/mcp` is how people write basic auth, but fetch refuses a URL with
 * credentials in it: they go into an Authorization header (unless the config sets one).
 */
export function httpTarget(raw: string, headers: Readonly<Record<string, string>>): { url: URL; headers: Record<string, string> } {
  const url = new URL(raw);
  const out = { ...headers };
  if (url.username || url.password) {
    if (!Object.keys(out).some((k) => k.toLowerCase() === "authorization")) {
      const pair = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
      out.Authorization = `Basic ${Buffer.from(pair).toString("base64")}`;
    }
    url.username = "";
    url.password = "";
  }
  return { url, headers: out };
}

/** The port a URL names, or its scheme's default. */
export function portOf(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
}

/** True if `work` settles within `ms` (its rejection counts as settled), false if the time runs out first. */
export async function within(ms: number, work: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, ms)))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
