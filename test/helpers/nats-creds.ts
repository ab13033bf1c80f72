import { createHash } from "node:crypto";
import { nkeys } from "nats";

/** The part of an nkeys key pair used here (nats types `nkeys` as any). */
interface KeyPair {
  getPublicKey(): string;
  getSeed(): Uint8Array;
  sign(data: Uint8Array): Uint8Array;
}

/**
 * NATS decentralized auth without `nsc`: an operator, its system account and one account, with a user
 * of that account, as JWTs signed here with nkeys.
 */
export interface NatsOperatorSetup {
  /** nats-server config: operator mode, both accounts preloaded into a memory resolver. */
  readonly serverConfig: string;
  /** The text of a .creds file for a user of the trusted account. */
  readonly creds: string;
  /** The user's JWT and public nkey, as in `creds`. */
  readonly userJwt: string;
  readonly userPublicKey: string;
  /** A well-formed .creds file whose account the server does not know: it must be refused. */
  readonly untrustedCreds: string;
}

const b64url = (data: string | Uint8Array): string => Buffer.from(data).toString("base64url");

/** A JWT as nsc writes it: ed25519 signature by the issuer's nkey over header.claims. */
function signJwt(issuer: KeyPair, subject: KeyPair, name: string, nats: Record<string, unknown>): string {
  const claims: Record<string, unknown> = { iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), name, sub: subject.getPublicKey(), nats };
  claims.jti = createHash("sha256").update(JSON.stringify(claims)).digest("base64url");
  const signed = `${b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }))}.${b64url(JSON.stringify(claims))}`;
  return `${signed}.${b64url(issuer.sign(new TextEncoder().encode(signed)))}`;
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

function userOf(account: KeyPair): { jwt: string; publicKey: string; creds: string } {
  const user: KeyPair = nkeys.createUser();
  const jwt = signJwt(account, user, "toolbus-test", { pub: {}, sub: {}, subs: -1, data: -1, payload: -1, type: "user", version: 2 });
  const seed = new TextDecoder().decode(user.getSeed());
  const creds = [
    "-----BEGIN NATS USER JWT-----",
    jwt,
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "NKEYs are sensitive and should be treated as secrets.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seed,
    "------END USER NKEY SEED------",
    "",
    "*************************************************************",
    "",
  ].join("\n");
  return { jwt, publicKey: user.getPublicKey(), creds };
}

export function natsOperatorSetup(): NatsOperatorSetup {
  const operator: KeyPair = nkeys.createOperator();
  const system: KeyPair = nkeys.createAccount();
  const account: KeyPair = nkeys.createAccount();
  const operatorJwt = signJwt(operator, operator, "toolbus-test", { type: "operator", version: 2 });
  // JetStream (which the test servers run) needs a system account.
  const systemJwt = signJwt(operator, system, "SYS", { limits: UNLIMITED, type: "account", version: 2 });
  const accountJwt = signJwt(operator, account, "toolbus", { limits: UNLIMITED, default_permissions: { pub: {}, sub: {} }, type: "account", version: 2 });
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: ${systemJwt}`,
    `  ${account.getPublicKey()}: ${accountJwt}`,
    "}",
    "",
  ].join("\n");
  const user = userOf(account);
  return { serverConfig, creds: user.creds, userJwt: user.jwt, userPublicKey: user.publicKey, untrustedCreds: userOf(nkeys.createAccount() as KeyPair).creds };
}
