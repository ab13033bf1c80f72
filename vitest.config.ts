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

export default defineConfig({
  resolve: { alias },
  test: {
    include: ["packages/*/src/**/*.test.ts", "services/*/src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Integration tests measure deadlines against real processes; on 2 shared cores, one file at a
    // time keeps those timings honest.
    fileParallelism: false,
    reporters: ["default"],
  },
});
