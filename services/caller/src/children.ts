import type { ChildProcess } from "node:child_process";

/**
 * Backend processes we started (stdio servers, launched HTTP servers). Each runs in its own process
 * group (so a Ctrl-C meant for toolbus does not reach it), which also means signals go to the group:
 * a server started through a wrapper (`npx`, `sh -c`, `uv run`) goes down with everything under it.
 */
const live = new Set<number>();
let hooked = false;

/** Signal a child's whole process group (falling back to the child alone). */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

/** Whether any process of the group led by `pgid` is still alive. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, we just may not signal it.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Remember a started child until it exits, so an abnormal exit of this process still ends it. */
export function trackChild(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  live.add(pid);
  child.once("exit", () => live.delete(pid));
  if (hooked) return;
  hooked = true;
  // A graceful stop has already closed them; this covers a crash or a second Ctrl-C (process.exit).
  // (A SIGKILLed toolbus cannot run this: stdio children see their stdin close and exit, and a launched
  // server's keeper sees its pipe close.)
  process.on("exit", () => {
    for (const p of live) {
      try {
        process.kill(-p, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });
}
