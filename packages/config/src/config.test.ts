import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, PROFILE_DEFAULTS, loadConfig, parseDuration } from "./index.js";

function file(text: string, name = "toolbus.yaml"): string {
  const path = join(mkdtempSync(join(tmpdir(), "toolbus-config-")), name);
  writeFileSync(path, text);
  return path;
}

describe("loadConfig", () => {
  it("compiles a file with profile defaults, durations in ms, paths relative to the file, frozen", () => {
    const path = file(`
profile: cloud
backends:
  fs:
    kind: mcp-stdio
    command: ./bin/server
    args: [--stdio]
    timeouts: { call: 90s }
  web:
    kind: mcp-http
    url: http://127.0.0.1:3001/mcp
`);
    const config = loadConfig({ file: path });
    expect(config.profile).toBe("cloud");
    const fs = config.backends.fs!;
    expect(fs).toMatchObject({ kind: "mcp-stdio", pool: 1, callTimeoutMs: 90_000, connectTimeoutMs: PROFILE_DEFAULTS.cloud.connectTimeoutMs });
    expect(fs.kind === "mcp-stdio" && fs.command).toBe(join(path, "..", "bin/server"));
    expect(config.backends.web).toMatchObject({ kind: "mcp-http", connections: 16, callTimeoutMs: 60_000 });
    expect(config.limits.defaultBudgetMs).toBe(PROFILE_DEFAULTS.cloud.defaultBudgetMs);
    expect(Object.isFrozen(config) && Object.isFrozen(config.backends.fs)).toBe(true);
  });

  it("layers flags over environment over file", () => {
    const path = file("profile: cloud\nnats: { servers: ['nats://file:4222'] }\nadmin: { port: 1 }\n");
    const env = { TOOLBUS_NATS_URL: "nats://env:4222,nats://env2:4222", TOOLBUS_PROFILE: "hybrid", TOOLBUS_ADMIN_PORT: "2", TOOLBUS_NATS_TOKEN: "s3cret" };
    const fromEnv = loadConfig({ file: path, env });
    expect(fromEnv.nats.servers).toEqual(["nats://env:4222", "nats://env2:4222"]);
    expect(fromEnv.profile).toBe("hybrid");
    expect(fromEnv.admin.port).toBe(2);
    expect(fromEnv.nats.token).toBe("s3cret");
    const fromFlags = loadConfig({ file: path, env, flags: { natsUrl: "nats://flag:4222", profile: "local", adminPort: 3 } });
    expect(fromFlags.nats.servers).toEqual(["nats://flag:4222"]);
    expect(fromFlags.profile).toBe("local");
    expect(fromFlags.admin.port).toBe(3);
  });

  it("lists every problem by path", () => {
    const path = file(
      JSON.stringify({
        profile: "laptop",
        heartbeat: "soon",
        backends: { files: { kind: "mcp-http", url: "nope" }, "Bad.Name": { kind: "mcp-stdio", command: "x" }, odd: { kind: "smtp" } },
      }),
      "toolbus.json",
    );
    let error: unknown;
    try {
      loadConfig({ file: path, env: { TOOLBUS_ADMIN_PORT: "http" } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^profile: /),
        expect.stringMatching(/^heartbeat: not a duration/),
        expect.stringMatching(/^backends\.files\.url: Invalid URL/),
        expect.stringMatching(/^backends\.Bad\.Name: |^backends: /),
        expect.stringMatching(/^backends\.odd\.kind: unknown kind/),
        expect.stringMatching(/^admin\.port: /),
      ]),
    );
    expect(problems).toHaveLength(6);
  });

  it("works with no file at all", () => {
    const config = loadConfig({ env: {} });
    expect(config.nats.servers).toEqual(["nats://127.0.0.1:4222"]);
    expect(config.backends).toEqual({});
  });
});

describe("parseDuration", () => {
  it.each([
    ["250ms", 250],
    ["5s", 5_000],
    ["1.5m", 90_000],
    ["2h", 7_200_000],
    ["42", 42],
    [42, 42],
  ])("%j → %d ms", (input, ms) => expect(parseDuration(input)).toBe(ms));
  it.each(["5 seconds", "-1s", "s", ""])("rejects %j", (input) => expect(parseDuration(input)).toBeUndefined());
});

describe("policies", () => {
  it("come from the profile, each overridable per backend", () => {
    const path = file(`
profile: local
backends:
  plain: { kind: mcp-stdio, command: x }
  tuned:
    kind: mcp-http
    urls: [http://127.0.0.1:1/mcp, http://127.0.0.1:2/mcp]
    breaker: { volume: 10, recovery: 1m }
    retry: { maxRetries: 0 }
    rateLimit: { rate: 12 }
    bulkhead: { maxConcurrent: 4, maxQueue: 0 }
    timeouts: { call: 2s, min: 10ms, multiplier: 3 }
    tools: { write-file: { idempotent: true } }
`);
    const config = loadConfig({ file: path });
    const local = PROFILE_DEFAULTS.local;
    expect(config.backends.plain!.policy).toEqual({
      enabled: true,
      breaker: local.breaker,
      retry: local.retry,
      rateLimit: undefined,
      bulkhead: local.bulkhead,
      adaptive: local.adaptive,
      tools: {},
    });
    const tuned = config.backends.tuned!;
    expect(tuned.kind === "mcp-http" && tuned.urls).toEqual(["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"]);
    expect(tuned.policy).toMatchObject({
      breaker: { volumeThreshold: 10, errorPercentage: 50, recoveryMs: 60_000 },
      retry: { maxRetries: 0, initialBackoffMs: 50 },
      rateLimit: { ratePerSec: 12, burst: 1 },
      bulkhead: { maxConcurrent: 4, maxQueue: 0 },
      adaptive: { minMs: 10, multiplier: 3 },
      tools: { "write-file": { idempotent: true } },
    });
    expect(tuned.callTimeoutMs).toBe(2_000);
  });

  it("an HTTP backend needs exactly one of url and urls", () => {
    const path = file("backends:\n  a: { kind: mcp-http }\n  b: { kind: mcp-http, url: 'http://x/mcp', urls: ['http://y/mcp'] }\n");
    expect(() => loadConfig({ file: path })).toThrow(/backends\.a\.url: set exactly one of url or urls[\s\S]*backends\.b\.url: set exactly one/);
  });
});
