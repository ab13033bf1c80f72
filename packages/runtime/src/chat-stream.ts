import { DiscardPolicy, StorageType, nanos, type JetStreamManager, type NatsConnection, type StreamConfig } from "nats";
import type { ChatLogConfig } from "@toolbus/config";
import { CHAT_DEAD_LETTER_STREAM, CHAT_DEAD_LETTER_SUBJECT, CHAT_STREAM, CHAT_STREAM_SUBJECTS } from "@toolbus/protocol";
import type { Logger } from "./logger.js";

/** How much the dead-letter stream keeps: enough to see what went wrong, never the whole disk. */
const DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Create the chat streams, or bring their limits in line with the config: TOOLBUS_CHAT (every chat
 * event, file storage, de-duplicated by event id within the window; when full the oldest events go,
 * which once written are in their files: logging never stops because the stream filled up) and
 * TOOLBUS_CHAT_DEAD (events no writer can write). Whichever
 * worker needs them calls this at start: the writer, and callers that log calls.
 */
export async function ensureChatStreams(nc: NatsConnection, chatLog: ChatLogConfig, log: Logger, replicas = 1): Promise<JetStreamManager> {
  const jsm = await nc.jetstreamManager();
  const chat: Partial<StreamConfig> = {
    name: CHAT_STREAM,
    subjects: [CHAT_STREAM_SUBJECTS],
    storage: StorageType.File,
    max_age: nanos(chatLog.stream.maxAgeMs),
    max_bytes: chatLog.stream.maxBytes,
    duplicate_window: nanos(chatLog.stream.duplicateWindowMs),
    discard: DiscardPolicy.Old,
    max_msg_size: -1,
    num_replicas: replicas,
  };
  const dead: Partial<StreamConfig> = {
    name: CHAT_DEAD_LETTER_STREAM,
    subjects: [CHAT_DEAD_LETTER_SUBJECT],
    storage: StorageType.File,
    max_age: nanos(chatLog.stream.maxAgeMs),
    max_bytes: DEAD_LETTER_MAX_BYTES,
    discard: DiscardPolicy.Old,
    num_replicas: replicas,
  };
  for (const config of [chat, dead]) {
    try {
      const info = await jsm.streams.info(config.name!);
      const c = info.config;
      if (
        c.max_age !== config.max_age ||
        c.max_bytes !== config.max_bytes ||
        // NATS 2.10 scales a stream's replicas in place (one node to three, after a cluster grows).
        c.num_replicas !== config.num_replicas ||
        (config.duplicate_window !== undefined && c.duplicate_window !== config.duplicate_window)
      ) {
        await jsm.streams.update(config.name!, { ...c, ...config } as StreamConfig);
        log.info({ stream: config.name }, "stream limits updated from the config");
      }
    } catch (err) {
      if ((err as { code?: string }).code !== "404" && !/stream not found/i.test((err as Error).message)) throw err;
      await jsm.streams.add(config);
      log.info({ stream: config.name }, "stream created");
    }
  }
  return jsm;
}
