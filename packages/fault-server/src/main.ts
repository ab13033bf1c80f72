#!/usr/bin/env node
/**
 * toolbus-fault-server: an MCP server for tests. `--stdio` (default) or `--http [--port N]
 * [--unknown-session-400]` (answer an unknown session id 400, as the reference server does, not 404).
 * Over HTTP it prints `listening <url>` on stdout once it accepts connections.
 */
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { createFaultServer, newState, startHttpFaultServer } from "./server.js";

const args = process.argv.slice(2);
if (args.includes("--http")) {
  const portArg = args[args.indexOf("--port") + 1];
  const unknownSession = args.includes("--unknown-session-400") ? 400 : 404;
  const server = await startHttpFaultServer({ port: args.includes("--port") ? Number(portArg) : 0, unknownSession });
  process.stdout.write(`listening ${server.url}\n`);
  const stop = (): void => void server.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  await createFaultServer(newState()).connect(new StdioServerTransport());
  // Exit when the client closes stdin, like a well-behaved stdio server.
  process.stdin.on("end", () => process.exit(0));
}
