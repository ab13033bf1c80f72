import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { defineConfig } from "vitest/config";

// Tests import workspace packages from their TypeScript sources (no build needed for unit tests);
// end-to-end tests run the built `toolbus` command, which `npm test` builds first.
const alias = Object.fromEntries(
  ["packages", "services"].flatMap((dir) =>
    readdirSync(resolve(dir)).map((name) => {
      const pkg = name === "toolbus" ? "cli" : name;
      return [`@toolbus/${pkg}`, resolve(join(dir, name, "src/index.ts"))];
    }),
  ),
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
