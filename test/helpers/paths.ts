import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** The built `toolbus` command. */
export const TOOLBUS_BIN = join(ROOT, "services/cli/bin/toolbus.js");
/** The reference MCP server's entry (`node <it> stdio|streamableHttp`). */
export const EVERYTHING_SERVER = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js", {
  paths: [join(ROOT, "services/cli")],
});
/** The project's fault-injecting MCP server (built). */
export const FAULT_SERVER = join(ROOT, "packages/fault-server/dist/main.js");
export const LLM_FAULT_SERVER = join(ROOT, "packages/llm-fault-server/dist/main.js");
