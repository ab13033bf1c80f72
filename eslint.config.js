// Lint rules. Module boundaries are enforced here: packages never import services, and a worker
// service never imports another (only the `toolbus` command composes workers into one process).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const services = ["@toolbus/router", "@toolbus/caller", "@toolbus/cli"];
const noImports = (names, message) => ({
  "no-restricted-imports": [
    "error",
    {
      paths: names.map((name) => ({ name, message })),
      patterns: [{ group: ["@toolbus/*/src/*", "@toolbus/*/dist/*"], message: "import a package by its public entry" }],
    },
  ],
});

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "bench-results/**", ".nx/**", "coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        setInterval: "readonly",
        clearInterval: "readonly",
        performance: "readonly",
        TextEncoder: "readonly",
        TextDecoder: "readonly",
        AbortController: "readonly",
        AbortSignal: "readonly",
        URL: "readonly",
        Buffer: "readonly",
        NodeJS: "readonly",
        Response: "readonly",
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "no-restricted-syntax": ["error", { selector: "TSEnumDeclaration", message: "use an `as const` object with a type of the same name" }],
    },
  },
  { files: ["packages/**/*.ts"], rules: noImports(services, "packages never depend on services") },
  { files: ["services/router/**/*.ts"], rules: noImports(["@toolbus/caller", "@toolbus/cli"], "workers talk over NATS, never by import") },
  { files: ["services/caller/**/*.ts"], rules: noImports(["@toolbus/router", "@toolbus/cli"], "workers talk over NATS, never by import") },
  {
    // Library code never reads the environment; only a worker's main (the `toolbus` command) does.
    files: ["packages/*/src/**/*.ts", "services/router/src/**/*.ts", "services/caller/src/**/*.ts"],
    ignores: ["**/*.test.ts", "packages/fault-server/src/main.ts"],
    rules: { "no-restricted-properties": ["error", { object: "process", property: "env", message: "library code takes config as a parameter" }] },
  },
);
