/**
 * The `toolbus` command: run workers (`up`, `worker`) and talk to a running toolbus (`call`, `tools`).
 * This is the only place that reads process.env and process.argv.
 */
import { existsSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { ToolbusClient, isNatsCredsError, isToolbusError } from "@toolbus/client";
import { isConfigError, loadConfig, parseDuration, type ConfigFlags, type ToolbusConfig } from "@toolbus/config";
import { TOOLBUS_VERSION, createLogger, exitOnSignals, runWorkers, type Logger } from "@toolbus/runtime";
import { ExitCode, exitCodeFor } from "./exit-codes.js";
import { NO_NATS_HELP, hostPort, isListening, natsServerOnPath, startLocalNats, type LocalNats } from "./local-nats.js";
import { WORKER_NAMES, allWorkers, caller, router, type WorkerName } from "./workers.js";

interface GlobalOptions {
  config?: string;
  nats?: string;
  creds?: string;
  profile?: string;
  adminPort?: number;
  logLevel?: string;
}

// `toolbus tools | head` closes our stdout early; that is not an error worth a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(ExitCode.OK);
  throw err;
});

const program = new Command();
program
  .name("toolbus")
  .description("Reliable, fast MCP tool calls as workers on NATS.")
  .version(TOOLBUS_VERSION)
  .option("-c, --config <file>", "config file (YAML or JSON); default $TOOLBUS_CONFIG or ./toolbus.yaml if present")
  .option("--nats <url>", "NATS server URL(s), comma-separated; default $TOOLBUS_NATS_URL or nats://127.0.0.1:4222")
  .option("--creds <file>", "NATS credentials file (user JWT and nkey seed); default $TOOLBUS_NATS_CREDS")
  .addOption(new Option("--profile <profile>", "defaults profile").choices(["local", "cloud", "hybrid"]))
  .option("--admin-port <port>", "admin HTTP port (/healthz, /readyz, /metrics); 0 = any free port, -1 = off", parseInteger)
  .addOption(new Option("--log-level <level>", "log level").choices(["trace", "debug", "info", "warn", "error", "silent"]))
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    `
Exit codes: 0 ok, 1 the tool reported an error, 2 bad usage or config, 3 request refused
(bad arguments, unknown backend/tool), 4 call failed (deadline, backend down; may be retried),
5 NATS unreachable.

Examples:
  toolbus up --config examples/toolbus.yaml
  toolbus call everything echo '{"message":"hello"}'
  toolbus tools --json`,
  );

function parseInteger(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError("expected an integer");
  return Number(value);
}

function parseTimeout(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) throw new InvalidArgumentError("expected a duration such as 500ms, 5s or 2m");
  return ms;
}

function globals(): GlobalOptions {
  return program.opts<GlobalOptions>();
}

/** Load the config the way every command does; a bad one ends the process with every problem listed. */
function config(): ToolbusConfig {
  const opts = globals();
  const file = opts.config ?? process.env.TOOLBUS_CONFIG ?? (existsSync("toolbus.yaml") ? "toolbus.yaml" : undefined);
  const flags: ConfigFlags = { natsUrl: opts.nats, natsCreds: opts.creds, profile: opts.profile, adminPort: opts.adminPort, logLevel: opts.logLevel };
  try {
    return loadConfig({ file, env: process.env, flags });
  } catch (err) {
    if (isConfigError(err)) {
      process.stderr.write(`toolbus: ${err.message}\n`);
      process.exit(ExitCode.USAGE);
    }
    throw err;
  }
}

function logger(cfg: ToolbusConfig, name: string): Logger {
  return createLogger({ level: cfg.log.level, name, pretty: process.stdout.isTTY === true });
}

/** Run workers until SIGTERM/SIGINT, optionally with a NATS we started ourselves. */
async function serve(name: string, cfg: ToolbusConfig, log: Logger, start: Parameters<typeof runWorkers>[0]["start"], ownNats?: LocalNats): Promise<void> {
  let proc;
  try {
    proc = await runWorkers({ name, config: cfg, logger: log, start });
  } catch (err) {
    if (isNatsCredsError(err)) {
      await ownNats?.stop();
      process.stderr.write(`toolbus: ${err.message}\n`);
      process.exit(ExitCode.USAGE);
    }
    log.fatal({ err }, "could not start");
    await ownNats?.stop();
    process.exit(ExitCode.FAILED);
  }
  exitOnSignals(
    {
      stop: async () => {
        await proc.stop();
        await ownNats?.stop();
      },
    },
    log,
  );
}

program
  .command("up")
  .description("run every worker (router and a caller per backend) in one process: the laptop default")
  .option("--no-start-nats", "do not start a nats-server when none answers")
  .action(async (opts: { startNats: boolean }) => {
    let cfg = config();
    const log = logger(cfg, "toolbus");
    const url = cfg.nats.servers[0]!;
    const { host, port } = hostPort(url);
    let ownNats: LocalNats | undefined;
    if (!(await isListening(host, port))) {
      const loopback = ["127.0.0.1", "localhost", "::1"].includes(host);
      if (!opts.startNats || !loopback || !natsServerOnPath()) {
        process.stderr.write(`toolbus: no NATS server answers at ${url}.\n${NO_NATS_HELP}\n`);
        process.exit(ExitCode.NO_NATS);
      }
      ownNats = await startLocalNats(host === "localhost" ? "127.0.0.1" : host, port);
      log.info({ url: ownNats.url, pid: ownNats.pid, storeDir: ownNats.storeDir }, `no NATS answered at ${url}; started nats-server with JetStream`);
      cfg = { ...cfg, nats: { ...cfg.nats, servers: [ownNats.url] } };
    }
    log.info({ config: cfg.source, profile: cfg.profile, backends: Object.keys(cfg.backends) }, "starting toolbus");
    await serve("toolbus-up", cfg, log, (deps) => allWorkers(deps, cfg), ownNats);
  });

program
  .command("worker")
  .description("run one worker (one Kubernetes pod): router, or caller --backend <name>")
  .argument("<name>", `worker to run: ${WORKER_NAMES.join(", ")}`)
  .option("-b, --backend <backend>", "backend for a caller")
  .action(async (name: string, opts: { backend?: string }) => {
    if (!(WORKER_NAMES as readonly string[]).includes(name))
      program.error(`unknown worker "${name}"; workers: ${WORKER_NAMES.join(", ")}`, { exitCode: ExitCode.USAGE });
    if (name === "caller" && !opts.backend) program.error("a caller needs --backend <name>", { exitCode: ExitCode.USAGE });
    const cfg = config();
    if (opts.backend && !cfg.backends[opts.backend]) {
      program.error(`backend "${opts.backend}" is not in the configuration (${cfg.source}); configured: ${Object.keys(cfg.backends).join(", ") || "none"}`, {
        exitCode: ExitCode.USAGE,
      });
    }
    const log = logger(cfg, `toolbus-${name}`);
    const worker = name as WorkerName;
    await serve(`toolbus-${name}`, cfg, log, async (deps) => [worker === "router" ? await router(deps, cfg) : await caller(deps, cfg, opts.backend!)]);
  });

async function withClient<T>(cfg: ToolbusConfig, fn: (client: ToolbusClient) => Promise<T>): Promise<T> {
  let client: ToolbusClient;
  try {
    client = await ToolbusClient.connect({
      servers: [...cfg.nats.servers],
      user: cfg.nats.user,
      pass: cfg.nats.pass,
      token: cfg.nats.token,
      credsFile: cfg.nats.credsFile,
      name: "toolbus-cli",
    });
  } catch (err) {
    // A creds file we cannot use is a configuration mistake, not an unreachable NATS.
    if (isNatsCredsError(err)) {
      process.stderr.write(`toolbus: ${err.message}\n`);
      process.exit(ExitCode.USAGE);
    }
    process.stderr.write(
      `toolbus: cannot reach NATS at ${cfg.nats.servers.join(", ")}: ${(err as Error).message}\nIs toolbus running? Start it with: toolbus up\n`,
    );
    process.exit(ExitCode.NO_NATS);
  }
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

function fail(err: unknown, json: boolean): never {
  if (isToolbusError(err)) {
    if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: err.toJSON() })}\n`);
    else process.stderr.write(`toolbus: ${err.code}: ${err.message}\n`);
    process.exit(exitCodeFor(err.code));
  }
  throw err;
}

program
  .command("call")
  .description("call a tool and print its result")
  .argument("<backend>", "backend name")
  .argument("<tool>", "tool name")
  .argument("[arguments]", "tool arguments as a JSON object", "{}")
  .option("-t, --timeout <duration>", "budget for the whole call, e.g. 500ms, 5s (default: the profile's)", parseTimeout)
  .option("--direct", "send straight to the backend's caller instead of through the router")
  .option("--json", "print the whole reply as JSON")
  .action(async (backend: string, tool: string, rawArgs: string, opts: { timeout?: number; direct?: boolean; json?: boolean }) => {
    let args: unknown;
    try {
      args = JSON.parse(rawArgs);
    } catch (err) {
      program.error(`arguments must be a JSON object: ${(err as Error).message}`, { exitCode: ExitCode.USAGE });
    }
    if (typeof args !== "object" || args === null || Array.isArray(args)) program.error("arguments must be a JSON object", { exitCode: ExitCode.USAGE });
    const cfg = config();
    await withClient(cfg, async (client) => {
      try {
        const { result, meta } = await client.callTool(backend, tool, args as Record<string, unknown>, {
          timeoutMs: opts.timeout ?? cfg.limits.defaultBudgetMs,
          direct: opts.direct,
        });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ok: true, result, meta })}\n`);
        } else {
          for (const item of result.content) {
            const text = (item as { text?: unknown }).text;
            process.stdout.write(`${typeof text === "string" ? text : JSON.stringify(item)}\n`);
          }
          if (result.structuredContent && result.content.length === 0) process.stdout.write(`${JSON.stringify(result.structuredContent, null, 2)}\n`);
        }
        process.exitCode = result.isError ? ExitCode.TOOL_ERROR : ExitCode.OK;
      } catch (err) {
        fail(err, opts.json === true);
      }
    });
  });

program
  .command("tools")
  .description("list the tools of every backend (or one)")
  .argument("[backend]", "only this backend")
  .option("-t, --timeout <duration>", "how long to wait for the router", parseTimeout, 5_000)
  .option("--json", "print JSON")
  .action(async (backend: string | undefined, opts: { timeout: number; json?: boolean }) => {
    const cfg = config();
    await withClient(cfg, async (client) => {
      try {
        const backends = await client.listTools(backend, { timeoutMs: opts.timeout });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(backends)}\n`);
          return;
        }
        for (const b of backends) {
          const state = b.liveCallers > 0 ? `${b.liveCallers} live caller(s)` : "no live caller";
          process.stdout.write(`${b.name} (${state})\n`);
          if (!b.tools) process.stdout.write("  (tools not known yet)\n");
          for (const t of b.tools ?? []) {
            const hints = [t.annotations?.readOnlyHint ? "read-only" : "", t.annotations?.idempotentHint ? "idempotent" : ""].filter(Boolean).join(", ");
            process.stdout.write(`  ${t.name}${hints ? ` [${hints}]` : ""}${t.description ? `: ${t.description.split("\n")[0]}` : ""}\n`);
          }
        }
      } catch (err) {
        fail(err, opts.json === true);
      }
    });
  });

program
  .command("status")
  .description("every running caller: its endpoints, whether they are live, their load and breaker state")
  .option("--wait <duration>", "how long to collect answers", parseTimeout, 500)
  .option("--json", "print JSON")
  .action(async (opts: { wait: number; json?: boolean }) => {
    const cfg = config();
    await withClient(cfg, async (client) => {
      const statuses = await client.callerStatus(opts.wait);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(statuses)}\n`);
        return;
      }
      if (statuses.length === 0) {
        process.stdout.write("no caller answered (is toolbus running? start it with: toolbus up)\n");
        process.exitCode = ExitCode.FAILED;
        return;
      }
      for (const s of statuses) {
        process.stdout.write(`${s.backend}  (caller ${s.workerId})\n`);
        for (const e of s.endpoints) {
          process.stdout.write(
            `  ${e.id.padEnd(40)} ${(e.live ? "live" : "down").padEnd(5)} breaker ${e.breaker.padEnd(9)} in flight ${e.inFlight}, queued ${e.queued}\n`,
          );
        }
      }
    });
  });

await program.parseAsync(process.argv);
