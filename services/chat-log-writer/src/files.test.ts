import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "@toolbus/runtime";
import { ConversationFiles, tailIds } from "./files.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), "toolbus-files-"));
  dirs.push(d);
  return d;
};
const line = (id: string, pad = 0) => ({ id, text: JSON.stringify({ id, pad: "x".repeat(pad) }) });

describe("ConversationFiles", () => {
  it("appends whole lines, and does not write again what the file's tail already holds", async () => {
    const dir = tempDir();
    const files = new ConversationFiles(dir, 10, 2_000, createLogger({ level: "silent" }));
    expect(await files.append("c1", [line("a"), line("b")])).toMatchObject({ written: 2, duplicates: 0 });
    // A redelivery: a and b again, then c.
    expect(await files.append("c1", [line("a"), line("b"), line("c")])).toMatchObject({ written: 1, duplicates: 2 });
    // Another writer (no memory of the file) recognises them from the tail.
    const other = new ConversationFiles(dir, 10, 2_000, createLogger({ level: "silent" }));
    expect(await other.append("c1", [line("b"), line("c"), line("d")])).toMatchObject({ written: 1, duplicates: 2 });
    const ids = readFileSync(files.pathOf("c1"), "utf8")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { id: string }).id);
    expect(ids).toEqual(["a", "b", "c", "d"]);
  });

  it("tailIds reads back across chunks, past lines longer than a chunk, and skips a partial last line", async () => {
    const dir = tempDir();
    const path = join(dir, "t.jsonl");
    const lines = Array.from({ length: 50 }, (_, i) => JSON.stringify({ id: `id-${i}`, pad: "y".repeat(i === 45 ? 200_000 : 3_000) }));
    writeFileSync(path, `${lines.join("\n")}\n{"id":"partial`);
    const handle = await open(path, "r");
    try {
      const size = (await handle.stat()).size;
      expect(await tailIds(handle, size, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `id-${40 + i}`));
      expect(await tailIds(handle, size, 1_000)).toHaveLength(50);
    } finally {
      await handle.close();
    }
    closeSync(openSync(join(dir, "empty.jsonl"), "w"));
    const empty = await open(join(dir, "empty.jsonl"), "r");
    expect(await tailIds(empty, 0, 5)).toEqual([]);
    await empty.close();
  });
});
