import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { toolbusCommand, writeConfig } from "../helpers/toolbus.js";

describe("configuration errors stop start-up with every problem listed", () => {
  it("a file with three mistakes is refused with all three named by path", async () => {
    const file = writeConfig({});
    writeFileSync(
      file,
      JSON.stringify({
        profile: "laptop",
        backends: {
          files: { kind: "mcp-http", url: "not a url" },
          local: { kind: "mcp-stdio", command: "node", pool: 0 },
        },
      }),
    );
    const { code, stderr } = await toolbusCommand(["--config", file, "up"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/profile: .*local.*cloud.*hybrid/);
    expect(stderr).toMatch(/backends\.files\.url: Invalid URL/);
    expect(stderr).toMatch(/backends\.local\.pool: .*>=1/);
    expect(stderr.match(/^\s+- /gm)).toHaveLength(3);
  });

  it("YAML with a syntax error is refused with the reason", async () => {
    const file = join(dirname(writeConfig({})), "broken.yaml");
    writeFileSync(file, "backends:\n  a: [unclosed\n");
    const { code, stderr } = await toolbusCommand(["--config", file, "worker", "router"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/not valid YAML/);
  });

  it("a missing file is refused, not ignored", async () => {
    const { code, stderr } = await toolbusCommand(["--config", "/nonexistent/toolbus.yaml", "up"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/cannot read .*ENOENT/);
  });

  it("usage errors exit 2 with a hint", async () => {
    const worker = await toolbusCommand(["worker", "caller"]);
    expect(worker.code).toBe(2);
    expect(worker.stderr).toMatch(/needs --backend/);
    const call = await toolbusCommand(["call", "everything", "echo", "[1,2]"]);
    expect(call.code).toBe(2);
    expect(call.stderr).toMatch(/JSON object/);
    const help = await toolbusCommand(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Exit codes/);
  });
});
