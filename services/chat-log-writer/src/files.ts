import { open, mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { chatFileName } from "@toolbus/protocol";
import type { Logger } from "@toolbus/runtime";

/** How far back a file is read to learn which events it already holds. */
const TAIL_CHUNK_BYTES = 64 * 1024;
/** Files whose last ids are remembered (the others are read again when next written). */
const KNOWN_FILES = 1_000;

/** One event to append: its id (to recognise it in the file) and its line, without the newline. */
export interface Line {
  readonly id: string;
  readonly text: string;
}

/** What an append did. */
export interface Appended {
  readonly written: number;
  /** Events already in the file (a redelivery after a crash), not written again. */
  readonly duplicates: number;
  readonly fsyncMs: number;
}

interface Known {
  /** The ids of the last lines of the file, oldest first (at most `keep`). */
  readonly ids: string[];
  readonly set: Set<string>;
  /** The file's size when we last read or wrote it: another size means someone else wrote since. */
  size: number;
}

/**
 * The conversation files of one directory. Every append takes the file's cross-process lock
 * (proper-lockfile: a lock directory refreshed while held, taken over once stale), learns which events
 * the file already holds (its last lines, read once and then remembered while nobody else writes),
 * writes the new lines in one `write`, fsyncs, and releases. A write that fails part-way is cut back
 * to the last whole line, so a file only ever holds whole lines.
 */
export class ConversationFiles {
  readonly #known = new Map<string, Known>();

  constructor(
    private readonly dir: string,
    /** How many recent ids to remember per file: at least what one batch may have left unacknowledged. */
    private readonly keep: number,
    private readonly lockStaleMs: number,
    private readonly log: Logger,
  ) {}

  pathOf(conversationId: string): string {
    return join(this.dir, chatFileName(conversationId));
  }

  /** Append `lines` (in order) to the conversation's file, skipping those it already holds; fsynced when this resolves. */
  async append(conversationId: string, lines: readonly Line[]): Promise<Appended> {
    const path = this.pathOf(conversationId);
    // The directory may have been removed under us: make it again (a permission problem then shows here).
    await mkdir(this.dir, { recursive: true });
    // Opened first, so that a disk or permission problem shows at once (the lock would retry it).
    let handle = await open(path, "a+");
    let release: (() => Promise<void>) | undefined;
    try {
      release = await lockfile.lock(path, {
        stale: this.lockStaleMs,
        realpath: false,
        retries: { retries: 100, minTimeout: 10, maxTimeout: Math.max(50, this.lockStaleMs / 4), factor: 1.5 },
        // A lock we could not keep fresh (a stalled disk): the next writer may take it; say so.
        onCompromised: (err) => this.log.warn({ file: path, err: err.message }, "chat-log file lock compromised"),
      });
      // Pruned (deleted) while we waited for the lock: write to the file as it is now, never to the old one.
      if ((await handle.stat()).ino !== (await stat(path).catch(() => undefined))?.ino) {
        await handle.close().catch(() => undefined);
        handle = await open(path, "a+");
      }
      const size = await wholeLines(handle, (await handle.stat()).size, path, this.log);
      const known = await this.#recent(path, handle, size);
      const fresh = lines.filter((line) => !known.set.has(line.id));
      let fsyncMs = 0;
      if (fresh.length > 0) {
        const data = Buffer.from(fresh.map((l) => `${l.text}\n`).join(""), "utf8");
        try {
          await writeAll(handle, data);
          const t0 = performance.now();
          await handle.sync();
          fsyncMs = performance.now() - t0;
        } catch (err) {
          // Disk full mid-write: keep only whole lines, and let the batch be retried.
          await handle.truncate(size).catch((cut: unknown) => this.log.error({ file: path, err: (cut as Error).message }, "could not cut a partial line"));
          this.#known.delete(path);
          throw err;
        }
        for (const line of fresh) remember(known, line.id, this.keep);
        known.size = size + data.length;
      }
      return { written: fresh.length, duplicates: lines.length - fresh.length, fsyncMs };
    } finally {
      await handle.close().catch(() => undefined);
      await release?.().catch((err: unknown) => this.log.debug({ file: path, err: (err as Error).message }, "could not release a chat-log file lock"));
    }
  }

  /** Forget what we remember of every file (after losing a partition, another writer may have written). */
  forget(): void {
    this.#known.clear();
  }

  /** The ids of the file's last lines: remembered if the file is as we left it, read from its tail otherwise. */
  async #recent(path: string, handle: Awaited<ReturnType<typeof open>>, size: number): Promise<Known> {
    const cached = this.#known.get(path);
    if (cached && cached.size === size) return cached;
    const known: Known = { ids: [], set: new Set(), size };
    for (const id of await tailIds(handle, size, this.keep)) remember(known, id, this.keep);
    // Bounded: the files touched most recently are remembered (a Map keeps insertion order).
    this.#known.delete(path);
    this.#known.set(path, known);
    if (this.#known.size > KNOWN_FILES) this.#known.delete(this.#known.keys().next().value!);
    return known;
  }
}

/**
 * The file's size once it ends with a whole line: a writer killed in the middle of a write can leave
 * part of a line, whose event it never acknowledged (it comes back); the part is cut off here, under
 * the lock, rather than glued to the next line.
 */
async function wholeLines(handle: Awaited<ReturnType<typeof open>>, size: number, path: string, log: Logger): Promise<number> {
  if (size === 0) return 0;
  const last = Buffer.alloc(1);
  await handle.read(last, 0, 1, size - 1);
  if (last[0] === 0x0a) return size;
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - TAIL_CHUNK_BYTES);
    const chunk = Buffer.alloc(end - start);
    await handle.read(chunk, 0, chunk.length, start);
    const newline = chunk.lastIndexOf(0x0a);
    if (newline >= 0) {
      end = start + newline + 1;
      break;
    }
    end = start;
  }
  await handle.truncate(end);
  log.warn({ file: path, cut: size - end }, "cut a partial last line (left by a writer that died mid-write; its event comes back)");
  return end;
}

function remember(known: Known, id: string, keep: number): void {
  known.ids.push(id);
  known.set.add(id);
  while (known.ids.length > keep) known.set.delete(known.ids.shift()!);
}

async function writeAll(handle: Awaited<ReturnType<typeof open>>, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset);
    offset += bytesWritten;
  }
}

/** The ids of the last `count` whole lines of a file (oldest first), reading back from its end. */
export async function tailIds(handle: Awaited<ReturnType<typeof open>>, size: number, count: number): Promise<string[]> {
  const ids: string[] = [];
  let end = size;
  let rest = Buffer.alloc(0);
  while (end > 0 && ids.length < count) {
    const start = Math.max(0, end - TAIL_CHUNK_BYTES);
    const chunk = Buffer.alloc(end - start);
    await handle.read(chunk, 0, chunk.length, start);
    let buf = Buffer.concat([chunk, rest]);
    // Complete lines are those after the first newline of this chunk (or all, at the file's start).
    const lines: Buffer[] = [];
    let cut = buf.length;
    for (let i = buf.length - 1; i >= 0; i--) {
      if (buf[i] !== 0x0a) continue;
      if (i + 1 < cut) lines.push(buf.subarray(i + 1, cut));
      cut = i;
    }
    if (start === 0 && cut > 0) lines.push(buf.subarray(0, cut));
    buf = buf.subarray(0, start === 0 ? 0 : cut);
    rest = Buffer.from(buf);
    for (const line of lines) {
      if (ids.length >= count) break;
      const id = idOf(line.toString("utf8"));
      if (id !== undefined) ids.push(id);
    }
    end = start;
  }
  return ids.reverse();
}

function idOf(line: string): string | undefined {
  try {
    const value = JSON.parse(line) as { id?: unknown };
    return typeof value.id === "string" ? value.id : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the directory exists and is a directory (for readiness). */
export async function isDirectory(dir: string): Promise<boolean> {
  return (await stat(dir).catch(() => undefined))?.isDirectory() ?? false;
}
