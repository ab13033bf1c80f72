import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { nkeys, type Authenticator } from "nats";
import { natsOperatorSetup } from "../../../test/helpers/nats-creds.js";
import { NatsCredsError, isNatsCredsError, toolbusConnectionOptions } from "./index.js";

describe("toolbusConnectionOptions", () => {
  const dir = mkdtempSync(join(tmpdir(), "toolbus-test-creds-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reconnects forever with jitter, pings every 10 s, builds no async traces", () => {
    const servers = ["nats://a:4222", "nats://b:4222"] as const;
    const options = toolbusConnectionOptions({ servers, name: "n", user: "u", pass: "p", token: "t" });
    expect(options).toMatchObject({
      servers: ["nats://a:4222", "nats://b:4222"],
      name: "n",
      user: "u",
      pass: "p",
      token: "t",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      pingInterval: 10_000,
      noAsyncTraces: true,
    });
    expect(options.authenticator).toBeUndefined();
    expect(toolbusConnectionOptions({ servers: "nats://a:4222", name: "n" }).servers).toBe("nats://a:4222");
  });

  it("a creds file becomes an authenticator that presents the user's JWT and signs the server's nonce", () => {
    const setup = natsOperatorSetup();
    const file = join(dir, "user.creds");
    writeFileSync(file, setup.creds);
    const authenticator = toolbusConnectionOptions({ servers: "nats://a:4222", name: "n", credsFile: file }).authenticator as Authenticator;
    const auth = authenticator("a-nonce") as { jwt: string; nkey: string; sig: string };
    expect(auth.jwt).toBe(setup.userJwt);
    expect(auth.nkey).toBe(setup.userPublicKey);
    const verified = (nkeys.fromPublic(auth.nkey) as { verify(data: Uint8Array, sig: Uint8Array): boolean }).verify(
      new TextEncoder().encode("a-nonce"),
      nkeys.decode(auth.sig) as Uint8Array,
    );
    expect(verified).toBe(true);
  });

  it("an unreadable creds file is a NatsCredsError naming the file", () => {
    const missing = join(dir, "missing.creds");
    let error: unknown;
    try {
      toolbusConnectionOptions({ servers: "nats://a:4222", name: "n", credsFile: missing });
    } catch (err) {
      error = err;
    }
    expect(isNatsCredsError(error)).toBe(true);
    expect(error).toBeInstanceOf(NatsCredsError);
    expect(error).toMatchObject({ path: missing, message: `cannot read the NATS creds file ${missing}: ENOENT` });
  });

  it("a file that is not a creds file is a NatsCredsError naming the file", () => {
    const garbage = join(dir, "garbage.creds");
    writeFileSync(garbage, "not a creds file\n");
    expect(() => toolbusConnectionOptions({ servers: "nats://a:4222", name: "n", credsFile: garbage })).toThrow(
      expect.objectContaining({ name: "NatsCredsError", path: garbage, message: expect.stringContaining(`${garbage} is not a NATS creds file`) }),
    );
  });
});
