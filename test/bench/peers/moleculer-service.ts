/**
 * The bench's peer: a Moleculer service on the same NATS, calling the same stdio MCP server (the
 * project's fault server) through the same MCP SDK client, one hop like `toolbus caller`. Run as its
 * own process, as toolbus is: `node --import tsx test/bench/peers/moleculer-service.ts <nats-url>`.
 * Prints "ready" once the service is registered.
 */
import { ServiceBroker } from "moleculer";
import { directStdio } from "../../helpers/mcp.js";
import { FAULT_SERVER } from "../../helpers/paths.js";

const url = process.argv[2];
if (!url) throw new Error("usage: moleculer-service.ts <nats-url>");
const client = await directStdio([FAULT_SERVER]);
const broker = new ServiceBroker({ nodeID: `mcp-peer-${process.pid}`, transporter: url, logger: false });
broker.createService({
  name: "mcp",
  actions: {
    // The same work as a toolbus caller's: the tool call through the SDK client, its result as the answer.
    call: (ctx) => {
      const { tool, arguments: args } = ctx.params as { tool: string; arguments: Record<string, unknown> };
      return client.callTool({ name: tool, arguments: args });
    },
  },
});
await broker.start();
process.stdout.write("ready\n");
const stop = (): void =>
  void broker
    .stop()
    .then(() => client[Symbol.asyncDispose]())
    .finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
