import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { conversationOfFile } from "@toolbus/protocol";

/** A line of a conversation file, parsed. */
export type LoggedEvent = Record<string, unknown> & { id: string; type: string; conversationId: string; timestamp: string; payload: Record<string, unknown> };

/**
 * Every conversation file of a chat-log directory, parsed line by line, by conversation id (other files
 * are skipped). A file that does not end with a whole line throws: the writer never leaves one.
 */
export function readChatLogs(dir: string): Map<string, LoggedEvent[]> {
  const logs = new Map<string, LoggedEvent[]>();
  for (const file of readdirSync(dir)) {
    const conversation = conversationOfFile(file);
    if (!conversation) continue;
    const text = readFileSync(join(dir, file), "utf8");
    if (text !== "" && !text.endsWith("\n")) throw new Error(`${file} ends in a partial line`);
    logs.set(
      conversation,
      text
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as LoggedEvent),
    );
  }
  return logs;
}
