import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolbusClient, type ToolbusClientOptions } from "@toolbus/client";
import { loadConfig } from "@toolbus/config";
import { connectNats, createLogger, natsConnectionOptions } from "@toolbus/runtime";
import { natsOperatorSetup, type NatsOperatorSetup } from "../helpers/nats-creds.js";
import { startNats, type TestNats } from "../helpers/nats-server.js";
import { testConfig, toolbusCommand } from "../helpers/toolbus.js";

// The toolbus command's exit codes (services/cli/src/exit-codes.ts).
const USAGE = 2;
const NO_NATS = 5;

/** A nats-server of the test's own that runs with `config` (written to a temp dir, removed after). */
function authServer(config: () => string): { nats: () => TestNats; dir: () => string } {
  let dir: string;
  let nats: TestNats;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "toolbus-test-nats-auth-"));
    const file = join(dir, "nats-server.conf");
    writeFileSync(file, config());
    nats = await startNats({ args: ["-c", file] });
  });
  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return { nats: () => nats, dir: () => dir };
}

/** Connect, ask for the callers' status (none run: an empty list), close. */
async function statusWith(options: ToolbusClientOptions): Promise<unknown[]> {
  const client = await ToolbusClient.connect(options);
  try {
    return await client.callerStatus(100);
  } finally {
    await client.close();
  }
}

/** `toolbus status --json` against `url`; with no caller running it prints [] and exits 0. */
function status(url: string, env: Record<string, string> = {}, flags: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return toolbusCommand(["--nats", url, ...flags, "status", "--json", "--wait", "100ms"], env);
}

describe("NATS token auth", () => {
  const server = authServer(() => 'authorization { token: "t0ken-for-tests" }\n');

  it("ToolbusClient connects with the token and is refused without it or with a wrong one", async () => {
    const servers = server.nats().url;
    expect(await statusWith({ servers, token: "t0ken-for-tests" })).toEqual([]);
    await expect(statusWith({ servers, token: "wrong" })).rejects.toThrow(/Authorization Violation/i);
    await expect(statusWith({ servers })).rejects.toThrow(/Authorization Violation/i);
  });

  it("a worker's connection (the runtime's options) uses the config's token", async () => {
    const config = testConfig(server.nats().url, { nats: { servers: [server.nats().url], token: "t0ken-for-tests" } });
    const nc = await connectNats(config.nats, { name: "toolbus-test", logger: createLogger({ level: "silent" }) });
    await nc.flush();
    await nc.close();
    const wrong = testConfig(server.nats().url, { nats: { servers: [server.nats().url], token: "wrong" } });
    await expect(connectNats(wrong.nats, { name: "toolbus-test", logger: createLogger({ level: "silent" }) })).rejects.toThrow(/Authorization Violation/i);
  });

  it("toolbus status connects with TOOLBUS_NATS_TOKEN; a wrong token exits 5 saying why", async () => {
    const ok = await status(server.nats().url, { TOOLBUS_NATS_TOKEN: "t0ken-for-tests" });
    expect(ok).toMatchObject({ code: 0, stdout: "[]\n" });
    const wrong = await status(server.nats().url, { TOOLBUS_NATS_TOKEN: "wrong" });
    expect(wrong.code).toBe(NO_NATS);
    expect(wrong.stderr).toMatch(/cannot reach NATS at .*Authorization Violation/i);
    expect(wrong.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("NATS user/password auth", () => {
  const server = authServer(() => 'authorization { user: "alice", password: "wonder-land" }\n');

  it("ToolbusClient connects with the user and password and is refused with a wrong password", async () => {
    const servers = server.nats().url;
    expect(await statusWith({ servers, user: "alice", pass: "wonder-land" })).toEqual([]);
    await expect(statusWith({ servers, user: "alice", pass: "wrong" })).rejects.toThrow(/Authorization Violation/i);
    await expect(statusWith({ servers })).rejects.toThrow(/Authorization Violation/i);
  });

  it("toolbus status connects with TOOLBUS_NATS_USER/PASS; a wrong password exits 5 saying why", async () => {
    const ok = await status(server.nats().url, { TOOLBUS_NATS_USER: "alice", TOOLBUS_NATS_PASS: "wonder-land" });
    expect(ok).toMatchObject({ code: 0, stdout: "[]\n" });
    const wrong = await status(server.nats().url, { TOOLBUS_NATS_USER: "alice", TOOLBUS_NATS_PASS: "wrong" });
    expect(wrong.code).toBe(NO_NATS);
    expect(wrong.stderr).toMatch(/cannot reach NATS at .*Authorization Violation/i);
  });
});

describe("NATS creds file (operator mode, JWTs signed by the test)", () => {
  const setup: NatsOperatorSetup = natsOperatorSetup();
  const server = authServer(() => setup.serverConfig);
  const file = (name: string, text: string): string => {
    const path = join(server.dir(), name);
    writeFileSync(path, text);
    return path;
  };

  it("ToolbusClient connects with credsFile; an untrusted user's creds are refused", async () => {
    const servers = server.nats().url;
    expect(await statusWith({ servers, credsFile: file("user.creds", setup.creds) })).toEqual([]);
    await expect(statusWith({ servers, credsFile: file("untrusted.creds", setup.untrustedCreds) })).rejects.toThrow(/Authorization Violation/i);
    await expect(statusWith({ servers })).rejects.toThrow(/Authorization Violation/i);
  });

  it("ToolbusClient.connect with an unreadable creds file throws NatsCredsError naming it", async () => {
    const missing = join(server.dir(), "missing.creds");
    await expect(ToolbusClient.connect({ servers: server.nats().url, credsFile: missing })).rejects.toMatchObject({ name: "NatsCredsError", path: missing });
  });

  it("TOOLBUS_NATS_CREDS reaches the connection options (and --creds wins over it); a worker connects with them", async () => {
    const creds = file("user.creds", setup.creds);
    const fromEnv = loadConfig({ env: { TOOLBUS_NATS_URL: server.nats().url, TOOLBUS_NATS_CREDS: creds } });
    expect(fromEnv.nats.credsFile).toBe(creds);
    const options = natsConnectionOptions(fromEnv.nats, "toolbus-test");
    const authenticator = options.authenticator as (nonce?: string) => { jwt?: string };
    expect(authenticator("nonce").jwt).toBe(setup.userJwt);
    expect(loadConfig({ env: { TOOLBUS_NATS_CREDS: "/from/env.creds" }, flags: { natsCreds: creds } }).nats.credsFile).toBe(creds);
    const nc = await connectNats(fromEnv.nats, { name: "toolbus-test", logger: createLogger({ level: "silent" }) });
    await nc.flush();
    await nc.close();
  });

  it("toolbus status connects with --creds and with TOOLBUS_NATS_CREDS; untrusted creds exit 5", async () => {
    const creds = file("user.creds", setup.creds);
    expect(await status(server.nats().url, {}, ["--creds", creds])).toMatchObject({ code: 0, stdout: "[]\n" });
    expect(await status(server.nats().url, { TOOLBUS_NATS_CREDS: creds })).toMatchObject({ code: 0, stdout: "[]\n" });
    const untrusted = await status(server.nats().url, {}, ["--creds", file("untrusted.creds", setup.untrustedCreds)]);
    expect(untrusted.code).toBe(NO_NATS);
    expect(untrusted.stderr).toMatch(/Authorization Violation/i);
  });

  it("a creds file that cannot be read or is not one exits 2 naming the file, without a stack trace", async () => {
    const url = server.nats().url;
    const missing = "/nonexistent/toolbus-test.creds";
    for (const result of [await status(url, {}, ["--creds", missing]), await status(url, { TOOLBUS_NATS_CREDS: missing })]) {
      expect(result.code).toBe(USAGE);
      expect(result.stderr).toBe(`toolbus: cannot read the NATS creds file ${missing}: ENOENT\n`);
    }
    const garbage = file("garbage.creds", "hello\n");
    const bad = await status(url, {}, ["--creds", garbage]);
    expect(bad.code).toBe(USAGE);
    expect(bad.stderr).toContain(`${garbage} is not a NATS creds file`);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    // A worker fails the same way before it starts anything.
    const worker = await toolbusCommand(["--nats", url, "--creds", missing, "--admin-port", "-1", "worker", "router"]);
    expect(worker.code).toBe(USAGE);
    expect(worker.stderr).toContain(`cannot read the NATS creds file ${missing}`);
  });
});
