import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Tests import workspace packages (each named `@toolbus/<its folder>`) from their TypeScript sources (no build needed for unit tests);
// end-to-end tests run the built `toolbus` command, which `npm test` builds first.
const root = dirname(fileURLToPath(import.meta.url));
const alias = Object.fromEntries(
  ["packages", "services"].flatMap((dir) => readdirSync(join(root, dir)).map((name) => [`@toolbus/${name}`, join(root, dir, name, "src/index.ts")])),
);

/**
 * The tests that talk to MCP servers over streamable HTTP run a second time with the MCP SDK's own
 * client transport (the fallback, `mcpHttp.transport: sdk`), so both transports keep passing them.
 */
const HTTP_TESTS = [
  "echo",
  "session-loss",
  "backend-restarts",
  "cancel-deadline",
  "limits",
  "health",
  "rediscovery",
  "resilience",
  "soak",
  "http-transport",
].map((name) => `test/integration/${name}.test.ts`);

export default defineConfig({
  resolve: { alias },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Integration tests measure deadlines against real processes; on 2 shared cores, one file at a
    // time keeps those timings honest.
    fileParallelism: false,
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "toolbus",
          include: ["packages/*/src/**/*.test.ts", "services/*/src/**/*.test.ts", "test/**/*.test.ts"],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: "sdk-http-transport", include: HTTP_TESTS, env: { TOOLBUS_MCP_HTTP_TRANSPORT: "sdk" }, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
