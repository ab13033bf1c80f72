import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CacheWorker } from "@toolbus/cache";
import type { CallerWorker } from "@toolbus/caller";
import { cache as startCacheWorker } from "@toolbus/cli";
import type { ToolbusClient } from "@toolbus/client";
import type { RouterWorker } from "@toolbus/router";
import { createLogger, createMetrics, connectNats, type Worker } from "@toolbus/runtime";
import { everythingStdio, faultStdio } from "../helpers/mcp.js";
import { removeTempDirs, startStack, testConfig, toolbusCommand, waitFor, type Stack } from "../helpers/toolbus.js";

const CACHE = { enabled: true, maxValueBytes: 4096 };

/** What the fault server counts: calls of `tool` that reached it (read without the cache). */
async function received(client: ToolbusClient, tool: string, backend = "fault"): Promise<number> {
  const { result } = await client.callTool(backend, "stats", {}, { cache: "bypass", timeoutMs: 5_000 });
  return ((result.structuredContent as { byTool: Record<string, number> }).byTool[tool] ?? 0) as number;
}

const workerOf = <T extends Worker>(stack: Stack, name: string): T => stack.toolbus.workers.find((w) => w.name === name) as T;

/** Wait until the cache replicas have stored `n` results in all. */
async function stored(caches: readonly CacheWorker[], n: number): Promise<void> {
  await waitFor(`${n} result(s) stored`, () => caches.reduce((sum, c) => sum + c.status().stores, 0) >= n, 5_000);
}

describe("the cache: hits, misses, TTL, what is never cached", () => {
  let stack: Stack;
  let client: ToolbusClient;
  let cache: CacheWorker;

  beforeAll(async () => {
    stack = await startStack({
      cache: CACHE,
      backends: { fault: { ...faultStdio(), tools: { echo: { cacheTtl: "600ms" } } }, everything: everythingStdio() },
    });
    client = stack.client;
    cache = workerOf<CacheWorker>(stack, "cache");
    await waitFor("the router to see the cache", () => workerOf<RouterWorker>(stack, "router").cache!.available());
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
    removeTempDirs();
  });

  it("a miss reaches the backend, the repeat is an L1 hit that does not, and after the TTL it misses again", async () => {
    const before = await received(client, "echo");
    const stores = cache.status().stores;
    const first = await client.callTool("fault", "echo", { message: "ttl" }, { timeoutMs: 5_000 });
    expect(first.meta.cached).toBe(false);
    await stored([cache], stores + 1);
    const second = await client.callTool("fault", "echo", { message: "ttl" }, { timeoutMs: 5_000 });
    expect(second.meta).toMatchObject({ cached: "l1", backend: "fault", endpoint: first.meta.endpoint, attempts: 0 });
    expect(second.result).toEqual(first.result);
    expect(await received(client, "echo")).toBe(before + 1);
    await new Promise((r) => setTimeout(r, 700));
    const expired = await client.callTool("fault", "echo", { message: "ttl" }, { timeoutMs: 5_000 });
    expect(expired.meta.cached).toBe(false);
    expect(await received(client, "echo")).toBe(before + 2);
  });

  it("compares arguments as canonical JSON: the same object in another key order is the same call", async () => {
    const stores = cache.status().stores;
    const first = await client.callTool("fault", "sleep", { ms: 1, progressEveryMs: 500 }, { timeoutMs: 5_000 });
    expect(first.meta.cached).toBe(false);
    await stored([cache], stores + 1);
    const reordered = await client.callTool("fault", "sleep", { progressEveryMs: 500, ms: 1 }, { timeoutMs: 5_000 });
    expect(reordered.meta.cached).toBe("l1");
  });

  it("caches a server nobody here wrote (server-everything): structured content comes back as it was", async () => {
    const args = { location: "Chicago" };
    const first = await client.callTool("everything", "get-structured-content", args, { timeoutMs: 5_000 });
    expect(first.meta.cached).toBe(false);
    await waitFor("the hit", async () => (await client.callTool("everything", "get-structured-content", args, { timeoutMs: 5_000 })).meta.cached === "l1");
    const hit = await client.callTool("everything", "get-structured-content", args, { timeoutMs: 5_000 });
    expect(hit.result).toEqual(first.result);
    expect(hit.result.structuredContent).toBeDefined();
  });

  it("never caches a tool without readOnlyHint, an isError result, a value over the cap, or a bypassing call", async () => {
    const counts = async () => ({
      unsafe: await received(client, "flaky-unsafe"),
      fail: await received(client, "fail"),
      big: await received(client, "big"),
      echo: await received(client, "echo"),
    });
    const before = await counts();
    for (let i = 0; i < 2; i++) {
      const unsafe = await client.callTool("fault", "flaky-unsafe", { id: "never-cached", failures: 0 }, { timeoutMs: 5_000 });
      expect(unsafe.meta.cached).toBe(false);
      const failed = await client.callTool("fault", "fail", { reason: "no" }, { timeoutMs: 5_000 });
      expect(failed.result.isError).toBe(true);
      expect(failed.meta.cached).toBe(false);
      const big = await client.callTool("fault", "big", { bytes: 10_000 }, { timeoutMs: 5_000 });
      expect(big.meta.cached).toBe(false);
      expect(big.result.content[0]!.text as string).toHaveLength(10_000);
      await new Promise((r) => setTimeout(r, 100));
    }
    // A cached echo, then the same call bypassing the cache: it reaches the backend.
    await client.callTool("fault", "echo", { message: "bypass" }, { timeoutMs: 5_000 });
    await waitFor("the hit", async () => (await client.callTool("fault", "echo", { message: "bypass" }, { timeoutMs: 5_000 })).meta.cached === "l1");
    const echoes = await received(client, "echo");
    const stores = cache.status().stores;
    const bypassed = await client.callTool("fault", "echo", { message: "bypass-only" }, { timeoutMs: 5_000, cache: "bypass" });
    expect(bypassed.meta.cached).toBe(false);
    expect(await received(client, "echo")).toBe(echoes + 1);
    // Nor is its result stored: the same call without bypass is a miss.
    await new Promise((r) => setTimeout(r, 100));
    expect(cache.status().stores).toBe(stores);
    expect((await client.callTool("fault", "echo", { message: "bypass-only" }, { timeoutMs: 5_000 })).meta.cached).toBe(false);
    const after = await counts();
    expect(after.unsafe - before.unsafe).toBe(2);
    expect(after.fail - before.fail).toBe(2);
    expect(after.big - before.big).toBe(2);
  });

  it("50 identical concurrent calls of a slow read-only tool reach the backend once", async () => {
    const before = await received(client, "sleep");
    const calls = await Promise.all(Array.from({ length: 50 }, () => client.callTool("fault", "sleep", { ms: 400 }, { timeoutMs: 5_000 })));
    expect(calls.every((c) => c.result.content[0]!.text === "slept 400 ms")).toBe(true);
    expect(await received(client, "sleep")).toBe(before + 1);
  });

  it("a waiter with a shorter deadline than the shared call gets DEADLINE_EXCEEDED on time, the others their result", async () => {
    const before = await received(client, "sleep");
    const long = client.callTool("fault", "sleep", { ms: 600 }, { timeoutMs: 5_000 });
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await expect(client.callTool("fault", "sleep", { ms: 600 }, { timeoutMs: 200 })).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED" });
    expect(Date.now() - started).toBeLessThan(450);
    expect((await long).meta.cached).toBe(false);
    // The impatient call joined the shared one: the backend saw a single call.
    expect(await received(client, "sleep")).toBe(before + 1);
  });

  it("a result of a call that started before an invalidation is not stored", async () => {
    const call = () => client.callTool("fault", "sleep", { ms: 300, maxMs: 300 }, { timeoutMs: 5_000 });
    const stores = cache.status().stores;
    const slow = call();
    await new Promise((r) => setTimeout(r, 100));
    await client.invalidateCache("fault", "sleep");
    expect((await slow).meta.cached).toBe(false);
    await new Promise((r) => setTimeout(r, 200));
    expect(cache.status().stores).toBe(stores);
    expect((await call()).meta.cached).toBe(false);
  });

  /**
   * Make a call (by default `big`, whose TTL of minutes means only an invalidation makes it miss here);
   * true when the cache itself missed it (the router did hand it over, and the entry was gone).
   */
  async function missedInCache(backend = "fault", tool = "big", args: Record<string, unknown> = { bytes: 3 }): Promise<boolean> {
    const misses = cache.status().misses;
    const { meta } = await client.callTool(backend, tool, args, { timeoutMs: 5_000 });
    // A miss counted by the cache: the router did hand it over, and the entry was gone.
    return meta.cached === false && cache.status().misses === misses + 1;
  }

  it("tools/list_changed and resources/updated from the backend drop its entries", async () => {
    const hit = async () => (await client.callTool("fault", "big", { bytes: 3 }, { timeoutMs: 5_000 })).meta.cached;
    await waitFor("the hit", async () => (await hit()) === "l1");
    await client.callTool("fault", "add-tool", { name: "new-tool" }, { timeoutMs: 5_000 });
    await waitFor("the tools change to drop the entry", missedInCache, 5_000);
    await waitFor("the hit", async () => (await hit()) === "l1");
    // The fault server sends resources/updated unprompted (a server that follows the spec sends it only for a subscribed resource).
    await client.callTool("fault", "touch-resource", { uri: "file:///x" }, { timeoutMs: 5_000 });
    await waitFor("the resource change to drop the entry", missedInCache, 5_000);
  });

  it("a stdio server that restarts (server-everything, killed) has its entries dropped", async () => {
    const args = { message: "restart" };
    await client.callTool("everything", "echo", args, { timeoutMs: 5_000 });
    await waitFor("the hit", async () => (await client.callTool("everything", "echo", args, { timeoutMs: 5_000 })).meta.cached === "l1");
    const everything = workerOf<CallerWorker>(stack, "caller:everything");
    const oldPid = everything.endpoints[0]!.pid!;
    process.kill(oldPid, "SIGKILL");
    await waitFor("the server to be back", () => everything.endpoints[0]!.live && everything.endpoints[0]!.pid !== oldPid, 10_000);
    await waitFor("the restart to drop the entry", () => missedInCache("everything", "echo", args), 5_000);
  });

  it("`toolbus cache invalidate <backend> [tool]` drops entries", async () => {
    const hit = async () => (await client.callTool("fault", "big", { bytes: 4 }, { timeoutMs: 5_000 })).meta.cached;
    await client.invalidateCache("fault");
    await waitFor("the hit", async () => (await hit()) === "l1");
    const tool = await toolbusCommand(["cache", "invalidate", "fault", "big", "--nats", stack.nats.url]);
    expect(tool.stderr).toBe("");
    // The count is what the bucket held: the store of the hit's value may still be on its way there.
    expect(tool.stdout).toMatch(/^invalidated fault tool big: [01] entr(y|ies) removed from the shared tier; every replica's memory dropped them\n$/);
    expect(tool.code).toBe(0);
    expect(await hit()).toBe(false);
    await waitFor("the hit", async () => (await hit()) === "l1");
    const all = await toolbusCommand(["cache", "invalidate", "fault", "--json", "--nats", stack.nats.url]);
    expect(JSON.parse(all.stdout)).toMatchObject({ ok: true, shared: true });
    expect(await hit()).toBe(false);
    const unknown = await toolbusCommand(["cache", "invalidate", "Not A Backend", "--nats", stack.nats.url]);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/BAD_REQUEST/);
  });

  it("`toolbus status` shows each cache replica's hit ratio; `toolbus cache stats --json` its counters", async () => {
    const status = await toolbusCommand(["--nats", stack.nats.url, "status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^cache cache-[0-9a-f]{8}: hit ratio \d+\.\d% \(\d+ from memory, \d+ shared, \d+ misses\), \d+ entries, \d+ KiB$/m);
    const stats = await toolbusCommand(["--nats", stack.nats.url, "cache", "stats", "--json"]);
    const [only] = JSON.parse(stats.stdout) as Array<ReturnType<CacheWorker["status"]>>;
    expect(only).toMatchObject({ workerId: cache.status().workerId, shared: true });
    expect(only!.hits.l1).toBeGreaterThan(5);
    expect(only!.misses).toBeGreaterThan(5);
  });
});

describe("the cache: results that vary by identity", () => {
  let stack: Stack;
  let client: ToolbusClient;

  beforeAll(async () => {
    stack = await startStack({ cache: CACHE, backends: { fault: { ...faultStdio(), cache: { vary: ["X-User"] } } } });
    client = stack.client;
    await waitFor("the router to see the cache", () => workerOf<RouterWorker>(stack, "router").cache!.available());
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  it("one user's result is never served to another, and a call that names no user is not cached", async () => {
    const as = (user: string | undefined) =>
      client.callTool("fault", "echo", { message: "private" }, { timeoutMs: 5_000, ...(user ? { headers: { "X-User": user } } : {}) });
    expect((await as("alice")).meta.cached).toBe(false);
    await waitFor("alice's hit", async () => (await as("alice")).meta.cached === "l1");
    expect((await as("bob")).meta.cached).toBe(false);
    // Header names match without regard to case, as in HTTP.
    const lower = await client.callTool("fault", "echo", { message: "private" }, { timeoutMs: 5_000, headers: { "x-user": "alice" } });
    expect(lower.meta.cached).toBe("l1");
    const before = await received(client, "echo");
    expect((await as(undefined)).meta.cached).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect((await as(undefined)).meta.cached).toBe(false);
    expect(await received(client, "echo")).toBe(before + 2);
  });
});

describe("the cache: two replicas share the second tier", () => {
  let stack: Stack;
  let client: ToolbusClient;
  const extra: Worker[] = [];

  beforeAll(async () => {
    stack = await startStack({ cache: CACHE, backends: { fault: faultStdio() } });
    client = stack.client;
    await waitFor("the router to see the cache", () => workerOf<RouterWorker>(stack, "router").cache!.available());
  });
  afterEach(async () => {
    await Promise.allSettled(extra.splice(0).map((w) => w.stop()));
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  /** A second cache replica, with its own NATS connection (as in another pod). */
  async function replica(): Promise<CacheWorker & { close(): Promise<void> }> {
    const config = testConfig(stack.nats.url, { cache: CACHE, backends: { fault: faultStdio() } });
    const logger = createLogger({ level: "silent" });
    const nc = await connectNats(config.nats, { name: "cache-replica", logger });
    const worker = (await startCacheWorker({ nc, logger, metrics: createMetrics() }, config)) as CacheWorker;
    const close = async () => {
      await worker.stop();
      await nc.drain();
    };
    extra.push({ ...worker, stop: close });
    return Object.assign(worker, { close });
  }

  it("a value stored through one replica is an L2 hit through another whose memory is cold", async () => {
    const first = workerOf<CacheWorker>(stack, "cache");
    const call = () => client.callTool("fault", "echo", { message: "shared" }, { timeoutMs: 5_000 });
    expect((await call()).meta.cached).toBe(false);
    await stored([first], 1);
    const second = await replica();
    await first.stop();
    const viaSecond = await call();
    expect(viaSecond.meta.cached).toBe("l2");
    expect((await call()).meta.cached).toBe("l1");
    expect(second.status().hits).toEqual({ l1: 1, l2: 1 });
  });

  it("an invalidation through one replica is seen by the other", async () => {
    const a = await replica();
    const b = await replica();
    const replicas = [a, b];
    const call = (message: string) => client.callTool("fault", "echo", { message }, { timeoutMs: 5_000 });
    for (const m of ["one", "two", "three"]) await call(m);
    // Every entry in both replicas' memory: each miss in one is an L2 hit that fills it.
    await waitFor("both replicas to hold every entry", async () => {
      for (const m of ["one", "two", "three"]) await call(m);
      return replicas.every((r) => r.status().entries === 3);
    });
    // The shared tier also holds the previous test's entry.
    expect((await client.invalidateCache("fault", "echo")).removed).toBeGreaterThanOrEqual(3);
    await waitFor("both replicas' memory to be empty", () => replicas.every((r) => r.status().entries === 0), 5_000);
    expect((await call("one")).meta.cached).toBe(false);
  });
});
