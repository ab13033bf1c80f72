import { rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { toolbusCommand, writeConfig } from "../helpers/toolbus.js";

// writeConfig makes a temp dir per file; each test's are removed after it.
const tempDirs: string[] = [];
afterEach(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function configFile(raw: Record<string, unknown>): string {
  const file = writeConfig(raw);
  tempDirs.push(dirname(file));
  return file;
}

describe("configuration errors stop start-up with every problem listed", () => {
  it("a file with three mistakes is refused with all three named by path", async () => {
    const file = configFile({});
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
    expect(stderr).toMatch(/backends\.local\.pool: must be at least 1/);
    expect(stderr.match(/^\s+- /gm)).toHaveLength(3);
  });

  describe("values below their floor are refused before NATS is needed", () => {
    // Nothing listens on port 1: a command that got as far as connecting would fail differently.
    const belowFloors = {
      nats: { servers: ["nats://127.0.0.1:1"] },
      heartbeat: 0,
      backends: { x: { kind: "mcp-stdio", command: "node", timeouts: { call: 0 } } },
    };

    it.each([
      ["up", "--no-start-nats"],
      ["worker", "router"],
    ])("toolbus %s %s: heartbeat 0 and timeouts.call 0, both named", async (...command) => {
      const { code, stderr } = await toolbusCommand(["--config", configFile(belowFloors), ...command]);
      expect(code).toBe(2);
      expect(stderr).toMatch(/^\s+- heartbeat: must be at least 100ms$/m);
      expect(stderr).toMatch(/^\s+- backends\.x\.timeouts\.call: must be at least 10ms$/m);
      expect(stderr.match(/^\s+- /gm)).toHaveLength(2);
    });

    it("the same file at the floors gets past the config, as far as the missing NATS", async () => {
      const atFloors = { ...belowFloors, heartbeat: "100ms", backends: { x: { kind: "mcp-stdio", command: "node", timeouts: { call: "10ms" } } } };
      const { code, stderr } = await toolbusCommand(["--config", configFile(atFloors), "up", "--no-start-nats"]);
      expect(stderr).toMatch(/no NATS server answers/);
      expect(code).toBe(5);
    });
  });

  it("YAML with a syntax error is refused with the reason", async () => {
    const file = join(dirname(configFile({})), "broken.yaml");
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
