/**
 * The `toolbus` command: run workers (`up`, `worker`) and talk to a running toolbus (`call`, `tools`,
 * `status`, `health`).
 * This is the only place that reads process.env and process.argv.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { ErrorCode, HealthState, ToolbusClient, isNatsCredsError, isToolbusError, type CacheStatus, type HealthEvent } from "@toolbus/client";
import { LLM_DEFAULTS, isConfigError, isLlmBackend, loadConfig, parseDuration, type ConfigFlags, type ToolbusConfig } from "@toolbus/config";
import { CHAT_STREAM, CONVERSATION_ID_PATTERN, chatFileName, chatSubject, conversationOfFile } from "@toolbus/protocol";
import lockfile from "proper-lockfile";
import { TOOLBUS_VERSION, createLogger, exitOnSignals, runWorkers, type Logger } from "@toolbus/runtime";
import { manifestOf, renderBase } from "./deploy.js";
import { ExitCode, exitCodeFor } from "./exit-codes.js";
import {
  DEFAULT_NATS_IMAGE,
  NO_NATS_HELP,
  containerCli,
  hostPort,
  isListening,
  natsServerOnPath,
  startContainerNats,
  startLocalNats,
  type LocalNats,
} from "./local-nats.js";
import { WORKER_NAMES, allWorkers, gatewayStdio, worker as startWorker, type WorkerName } from "./workers.js";

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

/**
 * Load the config the way every command does; a bad one ends the process with every problem listed.
 * API keys are checked only where asked (`toolbus up`): a client command or a worker that does not call
 * the backend needs none, and a caller reads its own when it starts.
 */
function config(checkSecrets = false): ToolbusConfig {
  const opts = globals();
  const file = opts.config ?? process.env.TOOLBUS_CONFIG ?? (existsSync("toolbus.yaml") ? "toolbus.yaml" : undefined);
  const flags: ConfigFlags = { natsUrl: opts.nats, natsCreds: opts.creds, profile: opts.profile, adminPort: opts.adminPort, logLevel: opts.logLevel };
  try {
    return loadConfig({ file, env: process.env, flags, checkSecrets });
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

/**
 * Run workers until SIGTERM/SIGINT, optionally with a NATS we started ourselves. The signals are
 * handled from the start: one that arrives while the workers are still starting stops them gracefully
 * once they have started (a second one exits at once, as always).
 */
async function serve(name: string, cfg: ToolbusConfig, log: Logger, start: Parameters<typeof runWorkers>[0]["start"], ownNats?: LocalNats): Promise<void> {
  const started = runWorkers({ name, config: cfg, logger: log, start }).catch(async (err: unknown) => {
    if (isNatsCredsError(err)) {
      await ownNats?.stop();
      process.stderr.write(`toolbus: ${err.message}\n`);
      process.exit(ExitCode.USAGE);
    }
    log.fatal({ err }, "could not start");
    await ownNats?.stop();
    process.exit(ExitCode.FAILED);
  });
  // In the same turn as the start began, before it awaits anything.
  exitOnSignals(
    {
      stop: async () => {
        const proc = await started;
        await proc?.stop();
        await ownNats?.stop();
      },
    },
    log,
  );
  await started;
}

program
  .command("up")
  .description("run every worker (router and a caller per backend) in one process: the laptop default")
  .option("--no-start-nats", "do not start a nats-server when none answers")
  .action(async (opts: { startNats: boolean }) => {
    let cfg = config(true);
    const log = logger(cfg, "toolbus");
    const url = cfg.nats.servers[0]!;
    const { host, port } = hostPort(url);
    let ownNats: LocalNats | undefined;
    if (!(await isListening(host, port))) {
      const loopback = ["127.0.0.1", "localhost", "::1"].includes(host);
      const binary = opts.startNats && loopback && natsServerOnPath();
      // No binary: a container, where docker or podman answers (checked only then: it takes a moment).
      const cli = opts.startNats && loopback && !binary ? containerCli() : undefined;
      if (!binary && !cli) {
        process.stderr.write(`toolbus: no NATS server answers at ${url}.\n${NO_NATS_HELP}\n`);
        process.exit(ExitCode.NO_NATS);
      }
      const bind = host === "localhost" ? "127.0.0.1" : host;
      if (binary) {
        ownNats = await startLocalNats(bind, port);
        log.info({ url: ownNats.url, pid: ownNats.pid, storeDir: ownNats.storeDir }, `no NATS answered at ${url}; started nats-server with JetStream`);
      } else {
        const image = process.env.TOOLBUS_NATS_IMAGE || DEFAULT_NATS_IMAGE;
        ownNats = await startContainerNats(cli!, image, bind, port).catch((err: Error) => {
          process.stderr.write(`toolbus: no NATS server answers at ${url}, and ${err.message}.\n${NO_NATS_HELP}\n`);
          return process.exit(ExitCode.NO_NATS);
        });
        log.info(
          { url: ownNats.url, image, runtime: cli },
          `no NATS answered at ${url} and no nats-server binary; started NATS with JetStream in a container (${ownNats.storeDir})`,
        );
      }
      cfg = { ...cfg, nats: { ...cfg.nats, servers: [ownNats.url] } };
    }
    log.info({ config: cfg.source, profile: cfg.profile, backends: Object.keys(cfg.backends) }, "starting toolbus");
    await serve("toolbus-up", cfg, log, (deps) => allWorkers(deps, cfg), ownNats);
  });

program
  .command("worker")
  .description("run one worker (one Kubernetes pod): router, caller --backend <name>, cache, health-prober or chat-log-writer")
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
    await serve(`toolbus-${name}`, cfg, log, async (deps) => [await startWorker(name as WorkerName, deps, cfg, opts.backend)]);
  });

program
  .command("gateway")
  .description("the MCP front door: every backend's tools as one MCP server (streamable HTTP, or --stdio for a desktop client)")
  .option("--stdio", "serve MCP on stdin/stdout (logs go to stderr; no admin port unless --admin-port)")
  .action(async (opts: { stdio?: boolean }) => {
    let cfg = config();
    if (!opts.stdio) {
      const log = logger(cfg, "toolbus-gateway");
      return serve("toolbus-gateway", cfg, log, async (deps) => [await startWorker("gateway", deps, cfg)]);
    }
    // A desktop client starts this as a command, perhaps beside a running `toolbus up`: no admin port
    // to clash with unless asked for, and stdout is the protocol's alone.
    if (globals().adminPort === undefined) cfg = { ...cfg, admin: { ...cfg.admin, port: -1 } };
    const log = createLogger({ level: cfg.log.level, name: "toolbus-gateway", destination: process.stderr });
    let worker: Awaited<ReturnType<typeof gatewayStdio>> | undefined;
    const proc = await runWorkers({
      name: "toolbus-gateway",
      config: cfg,
      logger: log,
      start: async (deps) => [(worker = await gatewayStdio(deps, cfg))],
    }).catch((err: unknown) => {
      process.stderr.write(`toolbus: the gateway could not start: ${(err as Error).message}\n`);
      process.exit(isNatsCredsError(err) ? ExitCode.USAGE : ExitCode.NO_NATS);
    });
    exitOnSignals(proc, log);
    // The client closed stdin: the session is over.
    await worker!.stopped;
    await proc.stop();
    process.exit(ExitCode.OK);
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
  .option("--no-cache", "skip the cache: no lookup, no store (the call reaches the backend)")
  .option("-H, --header <name:value>", "send a header, e.g. the user a backend's results vary by (repeatable)", collectHeader, {})
  .option("--conversation <id>", "log the call in this conversation (tool_call and tool_result events; see toolbus chat-log)")
  .option("--json", "print the whole reply as JSON")
  .action(
    async (
      backend: string,
      tool: string,
      rawArgs: string,
      opts: { timeout?: number; direct?: boolean; json?: boolean; cache: boolean; header: Record<string, string>; conversation?: string },
    ) => {
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
            cache: opts.cache ? "default" : "bypass",
            headers: opts.header,
            ...(opts.conversation !== undefined ? { conversationId: opts.conversation } : {}),
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
    },
  );

program
  .command("chat")
  .description("ask an LLM backend (by backend or model name) and print its answer")
  .argument("<target>", "an LLM backend of the config, or a model one of them serves")
  .argument("<prompt>", "the user message")
  .option("--stream", "print the answer as it is generated")
  .option("--json", "print the whole reply as JSON (with --stream: one JSON line per chunk, then the reply)")
  .option("-s, --system <text>", "a system message before the prompt")
  .option("--max-tokens <n>", "the most tokens to generate", parseCount)
  .option("--temperature <t>", "sampling temperature, 0 to 2", parseFloat)
  .addOption(new Option("--intent <intent>", "what the request is for: analysis is complex (a longer timeout)").choices(["chat", "analysis", "completion"]))
  .option("-t, --timeout <duration>", "budget for the whole answer (default: the backend's timeout for the request's complexity)", parseTimeout)
  .option("--direct", "send straight to the backend's callers instead of through the router (no fallbacks)")
  .option("--conversation <id>", "log the chat in this conversation (user_message and assistant_message events)")
  .action(
    async (
      target: string,
      prompt: string,
      opts: {
        stream?: boolean;
        json?: boolean;
        system?: string;
        maxTokens?: number;
        temperature?: number;
        intent?: string;
        timeout?: number;
        direct?: boolean;
        conversation?: string;
      },
    ) => {
      const cfg = config();
      const configured = cfg.backends[target];
      if (configured && !isLlmBackend(configured)) program.error(`backend "${target}" is an MCP backend; use toolbus call`, { exitCode: ExitCode.USAGE });
      const llm = configured ?? Object.values(cfg.backends).find((b) => isLlmBackend(b) && b.models.includes(target));
      // Without the backend in this config, the LLM defaults (60 s simple, 180 s complex), not a tool call's budget.
      const ceiling =
        llm && isLlmBackend(llm) ? llm : { callTimeoutMs: LLM_DEFAULTS.simpleTimeoutMs, llm: { complexTimeoutMs: LLM_DEFAULTS.complexTimeoutMs } };
      const timeoutMs = opts.timeout ?? (opts.intent === "analysis" ? ceiling.llm.complexTimeoutMs : ceiling.callTimeoutMs) + 1_000;
      const messages = [...(opts.system !== undefined ? [{ role: "system" as const, content: opts.system }] : []), { role: "user" as const, content: prompt }];
      const options = { timeoutMs, direct: opts.direct, ...(opts.conversation !== undefined ? { conversationId: opts.conversation } : {}) };
      await withClient(cfg, async (client) => {
        try {
          // A backend (of this config, or one the router knows) is asked by name; anything else is a
          // model the router maps to a backend.
          const isBackend =
            configured !== undefined || (!llm && (await client.listTools(undefined, { timeoutMs: 2_000 }).catch(() => [])).some((b) => b.name === target));
          if (opts.direct && !isBackend) program.error(`--direct needs a backend name; "${target}" is not one`, { exitCode: ExitCode.USAGE });
          const request = {
            ...(isBackend ? { backend: target } : { model: target }),
            messages,
            ...(opts.maxTokens !== undefined ? { maxTokens: opts.maxTokens } : {}),
            ...(opts.temperature !== undefined ? { temperature: opts.temperature } : {}),
            ...(opts.intent !== undefined ? { intent: opts.intent as "chat" } : {}),
          };
          if (!opts.stream) {
            const reply = await client.chat(request, options);
            if (opts.json) process.stdout.write(`${JSON.stringify(reply)}\n`);
            else printAnswer(reply.message.content, reply.message.toolCalls);
            return;
          }
          const stream = client.chatStream(request, options);
          // Ctrl-C ends the stream (and the upstream request) instead of leaving it running.
          const onSigint = (): void => stream.cancel("interrupted (Ctrl-C)");
          process.once("SIGINT", onSigint);
          try {
            for await (const delta of stream) {
              if (opts.json) process.stdout.write(`${JSON.stringify(delta)}\n`);
              else if (delta.content) process.stdout.write(delta.content);
            }
            const reply = await stream.result;
            if (opts.json) process.stdout.write(`${JSON.stringify(reply)}\n`);
            else printAnswer("", reply.message.toolCalls);
          } finally {
            process.off("SIGINT", onSigint);
          }
        } catch (err) {
          if (opts.stream && !opts.json) process.stdout.write("\n");
          fail(err, opts.json === true);
        }
      });
    },
  );

/** The answer's text (a newline after it), then each tool call it asked for. */
function printAnswer(content: string, toolCalls: ReadonlyArray<{ name: string; arguments: Record<string, unknown> }>): void {
  process.stdout.write(`${content}\n`);
  for (const call of toolCalls) process.stdout.write(`tool call: ${call.name} ${JSON.stringify(call.arguments)}\n`);
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("expected a whole number above 0");
  return n;
}

function collectHeader(value: string, previous: Record<string, string>): Record<string, string> {
  const colon = value.indexOf(":");
  if (colon <= 0) throw new InvalidArgumentError("expected name:value");
  return { ...previous, [value.slice(0, colon).trim()]: value.slice(colon + 1).trim() };
}

/** One cache replica as a line: its hit ratio first. */
function cacheLine(c: CacheStatus): string {
  const lookups = c.hits.l1 + c.hits.l2 + c.misses;
  const ratio = lookups === 0 ? "-" : `${((100 * (c.hits.l1 + c.hits.l2)) / lookups).toFixed(1)}%`;
  return (
    `cache ${c.workerId}: hit ratio ${ratio} (${c.hits.l1} from memory, ${c.hits.l2} shared, ${c.misses} misses), ` +
    `${c.entries} entries, ${(c.bytes / 1024).toFixed(0)} KiB${c.shared ? "" : ", memory only"}`
  );
}

const cacheCommand = program.command("cache").description("the cache of tool results: its counters, and invalidation");
cacheCommand
  .command("stats")
  .description("every running cache replica: hit ratio, hits by tier, misses, entries and bytes")
  .option("--wait <duration>", "how long to collect answers", parseTimeout, 500)
  .option("--json", "print JSON")
  .action(async (opts: { wait: number; json?: boolean }) => {
    const cfg = config();
    await withClient(cfg, async (client) => {
      const caches = await client.cacheStatus(opts.wait);
      if (opts.json) process.stdout.write(`${JSON.stringify(caches)}\n`);
      else if (caches.length === 0) process.stdout.write("no cache worker answered (toolbus up runs one; or: toolbus worker cache)\n");
      else for (const c of caches) process.stdout.write(`${cacheLine(c)}\n`);
      if (caches.length === 0) process.exitCode = ExitCode.FAILED;
    });
  });
cacheCommand
  .command("invalidate")
  .description("drop every cached result of a backend, or of one of its tools, from every cache replica")
  .argument("<backend>", "backend name")
  .argument("[tool]", "only this tool")
  .option("-t, --timeout <duration>", "how long to wait for the cache", parseTimeout, 5_000)
  .option("--json", "print JSON")
  .action(async (backend: string, tool: string | undefined, opts: { timeout: number; json?: boolean }) => {
    const cfg = config();
    await withClient(cfg, async (client) => {
      try {
        const { removed, shared } = await client.invalidateCache(backend, tool, { timeoutMs: opts.timeout });
        if (opts.json) process.stdout.write(`${JSON.stringify({ ok: true, removed, shared })}\n`);
        else {
          const what = tool === undefined ? `backend ${backend}` : `${backend} tool ${tool}`;
          const where = shared ? "from the shared tier" : "from memory (no shared tier)";
          process.stdout.write(`invalidated ${what}: ${removed} entr${removed === 1 ? "y" : "ies"} removed ${where}; every replica's memory dropped them\n`);
        }
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
          const configured = cfg.backends[b.name];
          if (configured && isLlmBackend(configured))
            process.stdout.write(`  (an LLM backend, no tools: models ${configured.models.join(", ")}; ask it with toolbus chat)\n`);
          else if (!b.tools) process.stdout.write("  (tools not known yet)\n");
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
  .description("every running caller (its endpoints, whether they are live, their load and breaker state) and cache (its hit ratio)")
  .option("--wait <duration>", "how long to collect answers", parseTimeout, 500)
  .option("--json", "print JSON")
  .action(async (opts: { wait: number; json?: boolean }) => {
    const cfg = config();
    await withClient(cfg, async (client) => {
      const [statuses, caches] = await Promise.all([client.callerStatus(opts.wait), client.cacheStatus(opts.wait)]);
      // The callers only, as before there was a cache (scripts rely on it); `toolbus cache stats --json` has the caches.
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(statuses)}\n`);
        return;
      }
      if (statuses.length === 0) {
        process.stdout.write("no caller answered (is toolbus running? start it with: toolbus up)\n");
        process.exitCode = ExitCode.FAILED;
        return;
      }
      for (const c of caches) process.stdout.write(`${cacheLine(c)}\n`);
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

/** A chat event as one line for a person: time, type, then the payload (clipped). */
function chatLine(event: { timestamp?: unknown; type?: unknown; payload?: unknown }): string {
  const payload = JSON.stringify(event.payload ?? null);
  return `${String(event.timestamp)}  ${String(event.type).padEnd(17)} ${clip(payload, 200)}`;
}

const chatLog = program.command("chat-log").description("the chat log: events of conversations (stream TOOLBUS_CHAT, and the writer's JSONL files)");
chatLog
  .command("tail")
  .description("print a conversation's events from the stream (works from any machine); -f keeps following")
  .argument("<conversation>", "conversation id")
  .option("-f, --follow", "keep printing new events until Ctrl-C")
  .option("--json", "print each event as a JSON line")
  .action(async (conversation: string, opts: { follow?: boolean; json?: boolean }) => {
    if (!CONVERSATION_ID_PATTERN.test(conversation))
      program.error(`invalid conversation id ${JSON.stringify(conversation)}: ${CONVERSATION_ID_PATTERN}`, { exitCode: ExitCode.USAGE });
    const cfg = config();
    await withClient(cfg, async (client) => {
      const subject = chatSubject(conversation);
      let stored: number;
      try {
        const info = await (await client.nc.jetstreamManager()).streams.info(CHAT_STREAM, { subjects_filter: subject });
        stored = info.state.subjects?.[subject] ?? 0;
      } catch (err) {
        process.stderr.write(`toolbus: no chat stream ${CHAT_STREAM} (${(err as Error).message}); is a chat-log writer running?\n`);
        process.exitCode = ExitCode.FAILED;
        return;
      }
      if (stored === 0 && !opts.follow) return;
      const consumer = await client.nc.jetstream().consumers.get(CHAT_STREAM, { filterSubjects: subject });
      const messages = await consumer.consume();
      const signalled = opts.follow ? untilSignal().then(() => messages.close()) : undefined;
      for await (const msg of messages) {
        const text = new TextDecoder().decode(msg.data);
        if (opts.json) process.stdout.write(`${text}\n`);
        else {
          try {
            process.stdout.write(`${chatLine(JSON.parse(text) as Record<string, unknown>)}\n`);
          } catch {
            process.stdout.write(`(not JSON: ${clip(text, 200)})\n`);
          }
        }
        if (!opts.follow && msg.info.pending === 0) break;
      }
      await messages.close().catch(() => undefined);
      void signalled;
    });
  });
chatLog
  .command("show")
  .description("print a conversation's log file (what the writer has written: fsynced events)")
  .argument("<conversation>", "conversation id")
  .option("--dir <dir>", "the writer's directory (default: chatLog.dir of the config)")
  .option("--json", "print the file's lines as they are")
  .action(async (conversation: string, opts: { dir?: string; json?: boolean }) => {
    if (!CONVERSATION_ID_PATTERN.test(conversation))
      program.error(`invalid conversation id ${JSON.stringify(conversation)}: ${CONVERSATION_ID_PATTERN}`, { exitCode: ExitCode.USAGE });
    const dir = opts.dir ?? config().chatLog.dir;
    const file = join(dir, chatFileName(conversation));
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      process.stderr.write(`toolbus: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
      process.exit(ExitCode.FAILED);
    }
    for (const line of text.split("\n")) {
      if (line === "") continue;
      if (opts.json) process.stdout.write(`${line}\n`);
      else {
        try {
          process.stdout.write(`${chatLine(JSON.parse(line) as Record<string, unknown>)}\n`);
        } catch {
          process.stdout.write(`(not JSON: ${clip(line, 200)})\n`);
        }
      }
    }
  });

chatLog
  .command("prune")
  .description("delete conversation files not written for a while (the files' retention; the stream's is chatLog.stream)")
  .requiredOption("--older-than <duration>", "delete files last written longer ago than this, e.g. 720h", parseTimeout)
  .option("--dir <dir>", "the writer's directory (default: chatLog.dir of the config)")
  .option("--dry-run", "only list what would be deleted")
  .action(async (opts: { olderThan: number; dir?: string; dryRun?: boolean }) => {
    const dir = opts.dir ?? config().chatLog.dir;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      process.stderr.write(`toolbus: cannot read ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
      process.exit(ExitCode.FAILED);
    }
    const cutoff = Date.now() - opts.olderThan;
    let removed = 0;
    for (const name of names) {
      const conversation = conversationOfFile(name);
      if (!conversation) continue;
      const path = join(dir, name);
      if (statSync(path).mtimeMs >= cutoff) continue;
      if (!opts.dryRun) {
        // Under the writers' lock, and only if still old: an event that arrives meanwhile keeps the file.
        const release = await lockfile.lock(path, { realpath: false, stale: 10_000, retries: { retries: 20, minTimeout: 50 } });
        try {
          if (statSync(path).mtimeMs >= cutoff) continue;
          rmSync(path);
        } finally {
          await release();
        }
      }
      removed += 1;
      process.stdout.write(`${opts.dryRun ? "would delete" : "deleted"} ${path} (conversation ${conversation})\n`);
    }
    process.stdout.write(`${removed} conversation file${removed === 1 ? "" : "s"} ${opts.dryRun ? "to delete" : "deleted"}\n`);
  });

/** Whether an endpoint in this state serves calls: `toolbus health` exits 0 only when all do. */
function isServing(state: HealthState): boolean {
  return state === HealthState.healthy || state === HealthState.degraded;
}

const ANSI = { reset: "\x1b[0m", green: "\x1b[32m", yellow: "\x1b[33m", red: "\x1b[31m", dim: "\x1b[2m", bold: "\x1b[1m" } as const;
const STATE_COLOUR: Record<HealthState, string> = { healthy: ANSI.green, degraded: ANSI.yellow, unhealthy: ANSI.red, lost: ANSI.red, unknown: ANSI.dim };

/** "12s ago", "3m ago", "5h ago", "2d ago"; "?" for a time that does not parse. */
function ago(iso: string, now: number): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "?";
  // A prober's clock slightly ahead of ours would give a negative age.
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ago` : `${Math.floor(h / 24)}d ago`;
}

function latency(ms: number | null): string {
  if (ms === null) return "-";
  return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)}ms`;
}

/** At most `width` characters, "…" where it was cut. */
function clip(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? text.slice(0, Math.max(0, width)) : `${text.slice(0, width - 1).trimEnd()}…`;
}

/** A prober's reason (an error message, maybe several lines) as one line. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function byEndpoint(endpoints: Iterable<HealthEvent>): HealthEvent[] {
  return [...endpoints].sort((a, b) => a.backend.localeCompare(b.backend) || a.endpoint.localeCompare(b.endpoint, undefined, { numeric: true }));
}

/**
 * The health table as lines of at most `width` characters (so none wraps, which a redraw in place
 * relies on); the state coloured when `colour`.
 */
function healthTable(endpoints: readonly HealthEvent[], options: { now: number; width: number; colour: boolean }): string[] {
  const header = ["BACKEND", "ENDPOINT", "STATE", "LATENCY", "SINCE", "REASON"];
  const rows = endpoints.map((e) => [e.backend, e.endpoint, e.state, latency(e.latencyMs), ago(e.since, options.now), e.reason]);
  // STATE and LATENCY as wide as their widest value can be, so a redraw does not shift the columns.
  const minWidths = [0, 0, "unhealthy".length, "9999ms".length, 0];
  const widths = header.slice(0, 5).map((h, i) => Math.max(h.length, minWidths[i]!, ...rows.map((r) => r[i]!.length)));
  const reasonWidth = Math.max(10, options.width - widths.reduce((sum, w) => sum + w + 2, 0));
  const stateAt = widths[0]! + widths[1]! + 4;
  const line = (cells: string[], colour: string | undefined): string => {
    const plain = clip(
      cells
        .slice(0, 5)
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ") + `  ${clip(oneLine(cells[5]!), reasonWidth)}`,
      options.width,
    );
    if (!colour || plain.length <= stateAt) return plain;
    const end = Math.min(plain.length, stateAt + cells[2]!.length);
    return `${plain.slice(0, stateAt)}${colour}${plain.slice(stateAt, end)}${ANSI.reset}${plain.slice(end)}`;
  };
  return [line(header, undefined), ...rows.map((r) => line(r, options.colour ? STATE_COLOUR[r[2] as HealthState] : undefined))];
}

/** A terminal's width less one (a line that fills it exactly wraps in some terminals); 160 for a pipe. */
function tableWidth(): number {
  return process.stdout.isTTY === true ? Math.max(20, (process.stdout.columns ?? 80) - 1) : 160;
}

/** "3 endpoints: 2 healthy, 1 unhealthy" */
function healthSummary(endpoints: readonly HealthEvent[]): string {
  const counts = new Map<string, number>();
  for (const e of endpoints) counts.set(e.state, (counts.get(e.state) ?? 0) + 1);
  const parts = [HealthState.healthy, HealthState.degraded, HealthState.unhealthy, HealthState.lost, HealthState.unknown]
    .filter((s) => counts.has(s))
    .map((s) => `${counts.get(s)} ${s}`);
  return `${endpoints.length} endpoint${endpoints.length === 1 ? "" : "s"}${parts.length > 0 ? `: ${parts.join(", ")}` : ""}`;
}

/** A state change as one line, for a log or a pipe: time, endpoint, previous -> state, latency, reason. */
function healthChangeLine(e: HealthEvent): string {
  return `${e.time}  ${e.endpoint}  ${e.previous} -> ${e.state}  ${latency(e.latencyMs)}  ${oneLine(e.reason)}`;
}

/**
 * Resolves on the first SIGINT or SIGTERM. A second one (a hurried Ctrl-C, or `timeout`, which signals
 * the command and then its whole group) exits 0 at once: a watch has nothing to finish.
 */
function untilSignal(): Promise<void> {
  let signals = 0;
  return new Promise((resolve) => {
    const onSignal = (): void => {
      if (++signals > 1) process.exit(ExitCode.OK);
      resolve();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}

/**
 * `toolbus health --watch`: the table, then every event. On a terminal the table is redrawn in place
 * (and every second, so the "since" column stays true); otherwise, or with `json`, one line per state
 * change. Runs until SIGINT/SIGTERM.
 */
async function watchHealthTable(client: ToolbusClient, options: { timeoutMs: number; json: boolean; colour: boolean }): Promise<void> {
  // Listening from the start: a Ctrl-C while the table is read still exits 0, after the cleanup.
  const signalled = untilSignal();
  const live = process.stdout.isTTY === true && !options.json;
  const out = (text: string): void => void process.stdout.write(text);
  const key = (e: HealthEvent): string => `${e.backend}\n${e.endpoint}`;
  const newer = (a: HealthEvent, than: HealthEvent | undefined): boolean => !than || !(Date.parse(than.time) > Date.parse(a.time));
  let table = new Map<string, HealthEvent>();
  let updated = new Date();
  let note = "";
  let ready = false;
  let drawnLines = 0;
  let drawTimer: NodeJS.Timeout | undefined;

  const draw = (): void => {
    clearTimeout(drawTimer);
    drawTimer = undefined;
    const width = tableWidth();
    const rows = byEndpoint(table.values());
    const head = clip(`toolbus health · updated ${updated.toTimeString().slice(0, 8)} · ${healthSummary(rows)} · Ctrl-C to quit`, width);
    let lines = [options.colour ? head.replace(/^toolbus health/, `${ANSI.bold}$&${ANSI.reset}`) : head, ...(note ? [clip(oneLine(note), width)] : []), ""];
    lines.push(...(rows.length > 0 ? healthTable(rows, { now: Date.now(), width, colour: options.colour }) : ["(no endpoint known yet)"]));
    // The cursor cannot move above the top of the screen: a table taller than it is cut.
    const maxLines = Math.max(3, (process.stdout.rows ?? 24) - 1);
    if (lines.length > maxLines) lines = [...lines.slice(0, maxLines - 1), `… ${lines.length - maxLines + 1} more lines (a taller terminal shows them)`];
    // Up over the previous drawing, then each line erased and rewritten, then whatever is left below cleared.
    out(`${drawnLines > 0 ? `\x1b[${drawnLines}A\r` : ""}${lines.map((l) => `\x1b[2K${l}`).join("\n")}\n\x1b[0J`);
    drawnLines = lines.length;
  };
  // Bursts of events (a heartbeat round of many endpoints) make one redraw.
  const redrawSoon = (): void => {
    if (ready && drawTimer === undefined) drawTimer = setTimeout(draw, 50);
  };
  const changes: HealthEvent[] = [];
  const printChange = (e: HealthEvent): void => out(`${options.json ? JSON.stringify(e) : healthChangeLine(e)}\n`);

  const NO_PROBER = "no health prober answers (nobody serves toolbus.v1.health.get); waiting for its events";
  const watch = client.watchHealth((e) => {
    if (!newer(e, table.get(key(e)))) return;
    table.set(key(e), e);
    updated = new Date();
    if (note === NO_PROBER) note = ""; // it is there now
    if (live) redrawSoon();
    else if (e.change) {
      if (ready) printChange(e);
      else changes.push(e);
    }
  });

  /** Read the whole table; entries heard since that are newer than it are kept. */
  const refresh = async (): Promise<void> => {
    try {
      const endpoints = await client.health({ timeoutMs: options.timeoutMs });
      const fresh = new Map(endpoints.map((e) => [key(e), e]));
      for (const [k, e] of table) if (fresh.has(k) && !newer(fresh.get(k)!, e)) fresh.set(k, e);
      table = fresh;
      updated = new Date();
      note = "";
    } catch (err) {
      note =
        isToolbusError(err) && err.code === ErrorCode.BACKEND_UNAVAILABLE
          ? NO_PROBER
          : `could not read the health table: ${isToolbusError(err) ? `${err.code}: ` : ""}${(err as Error).message}`;
      if (!live) process.stderr.write(`toolbus: ${note}\n`);
    }
  };

  // A reconnect may have missed events: read the table again. (nats.js never ends this iteration; the
  // pending loop holds nothing that keeps the process alive.)
  void (async () => {
    for await (const status of client.nc.status()) {
      if (status.type === "disconnect") {
        note = "NATS connection lost; reconnecting…";
        if (live) draw();
        else process.stderr.write(`toolbus: ${note}\n`);
      } else if (status.type === "reconnect") {
        if (!live) process.stderr.write("toolbus: NATS connection back\n");
        note = "";
        await refresh();
        if (live) draw();
      }
    }
  })();

  if (live) out("\x1b[?25l"); // no cursor blinking over the table
  const showCursor = (): void => void (live && process.stdout.write("\x1b[?25h"));
  process.once("exit", showCursor);
  await client.nc.flush(); // subscribed before the table is read, so no change falls in between
  await refresh();
  ready = true;
  let ticker: NodeJS.Timeout | undefined;
  const onResize = (): void => {
    // Some terminals reflow the old lines on resize, so counting them back is unreliable: start over.
    out("\x1b[2J\x1b[H");
    drawnLines = 0;
    draw();
  };
  if (live) {
    draw();
    ticker = setInterval(draw, 1_000);
    process.stdout.on("resize", onResize);
  } else {
    const rows = byEndpoint(table.values());
    if (options.json) out(`${JSON.stringify(rows)}\n`);
    else if (rows.length > 0) out(`${healthTable(rows, { now: Date.now(), width: tableWidth(), colour: false }).join("\n")}\n`);
    for (const e of changes.splice(0)) printChange(e);
  }

  await signalled;
  watch.stop();
  clearInterval(ticker);
  clearTimeout(drawTimer);
  process.stdout.off("resize", onResize);
  showCursor();
  process.off("exit", showCursor);
  process.exitCode = ExitCode.OK;
}

program
  .command("health")
  .description("the health prober's view of every backend endpoint: state, latency, since when and why")
  .option("-t, --timeout <duration>", "how long to wait for the health prober", parseTimeout, 5_000)
  .option("--json", "print the endpoints as a JSON array (with --watch: then each state change as a JSON line)")
  .option("-w, --watch", "keep the table up to date until Ctrl-C (redrawn in place on a terminal, a line per state change otherwise)")
  .addHelpText(
    "after",
    `
States: healthy, degraded (answers, but slowly), unhealthy, lost (not found in its port range), unknown (not probed yet).
Exit codes: 0 every endpoint is healthy or degraded, 4 one is not or no health prober answers,
5 NATS unreachable; with --watch, 0 on Ctrl-C (a missing prober is waited for).`,
  )
  .action(async (opts: { timeout: number; json?: boolean; watch?: boolean }) => {
    const cfg = config();
    const json = opts.json === true;
    const colour = process.stdout.isTTY === true && !json && !process.env.NO_COLOR;
    await withClient(cfg, async (client) => {
      if (opts.watch) {
        await watchHealthTable(client, { timeoutMs: opts.timeout, json, colour });
        return;
      }
      let endpoints: HealthEvent[];
      try {
        endpoints = await client.health({ timeoutMs: opts.timeout });
      } catch (err) {
        fail(err, json);
      }
      if (json) process.stdout.write(`${JSON.stringify(endpoints)}\n`);
      else if (endpoints.length === 0) process.stdout.write("the health prober probes no endpoint\n");
      else process.stdout.write(`${healthTable(byEndpoint(endpoints), { now: Date.now(), width: tableWidth(), colour }).join("\n")}\n`);
      process.exitCode = endpoints.every((e) => isServing(e.state)) ? ExitCode.OK : ExitCode.FAILED;
    });
  });

const deploy = program.command("deploy").description("Kubernetes manifests for the workers of a config");
deploy
  .command("render")
  .description("render the kustomize base (a Deployment per worker, a caller per backend, probes, budgets, policies) from --config")
  .option("-o, --out <dir>", "write kustomization.yaml, toolbus.yaml, workers.yaml and nats-auth.conf into <dir> (default: print one manifest)")
  .option("--image <image>", "the toolbus container image", `toolbus:${TOOLBUS_VERSION}`)
  .option("--nats-url <url>", "NATS as the pods reach it", "nats://nats:4222")
  .addHelpText(
    "after",
    `
The output is a kustomize base; deploy/k8s/overlays/{dev,prod} add the NATS cluster and size it:
  toolbus deploy render --config toolbus.yaml --out deploy/k8s/base
  kubectl apply -k deploy/k8s/overlays/prod
Without --out, one manifest (the config and the NATS users as ConfigMaps, then every object) for
kubectl apply -f -. nats-auth.conf holds a NATS user per worker with its subjects; its header has the
command that creates their passwords (Secret toolbus-nats-users).`,
  )
  .action((opts: { out?: string; image: string; natsUrl: string }) => {
    const file = globals().config ?? process.env.TOOLBUS_CONFIG ?? (existsSync("toolbus.yaml") ? "toolbus.yaml" : "");
    if (!file) program.error("deploy render needs a config: --config <file>", { exitCode: ExitCode.USAGE });
    let base;
    try {
      // The config is checked as toolbus would load it before anything is rendered from it.
      loadConfig({ file, env: {}, checkSecrets: false });
      base = renderBase(file, { image: opts.image, natsUrl: opts.natsUrl });
    } catch (err) {
      process.stderr.write(`toolbus: ${isConfigError(err) ? err.message : `cannot render ${file}: ${(err as Error).message}`}\n`);
      process.exit(ExitCode.USAGE);
    }
    if (!opts.out) {
      process.stdout.write(manifestOf(base));
      return;
    }
    mkdirSync(opts.out, { recursive: true });
    for (const [name, text] of Object.entries(base)) writeFileSync(join(opts.out, name), text);
    process.stdout.write(
      `wrote ${Object.keys(base)
        .map((n) => join(opts.out!, n))
        .join(", ")}\n`,
    );
  });

await program.parseAsync(process.argv);
