import { randomBytes } from "node:crypto";
import { z } from "zod";
import { SUBJECT_PREFIX } from "./subjects.js";

/**
 * Chat events: what was said and done in a conversation, published to JetStream stream TOOLBUS_CHAT
 * and written by the chat-log writer to one JSONL file per conversation.
 *
 * Conversations are spread over CHAT_PARTITIONS subjects (`toolbus.v1.chat.<partition>.<conversation>`):
 * each partition has one durable consumer, read by one writer replica at a time, so the events of a
 * conversation are written in the order they were published however many writers share the work.
 */
export const CHAT_PARTITIONS = 16;

/** The stream of chat events, and the subjects it holds. */
export const CHAT_STREAM = "TOOLBUS_CHAT";
/** `toolbus.v1.chat.<partition>.<conversation>` only: an event on any other subject is refused at publish, never stored unread. */
export const CHAT_STREAM_SUBJECTS = `${SUBJECT_PREFIX}.chat.*.*`;
/** Events no writer can write (not JSON, wrong shape, too large): kept here with the reason, in stream TOOLBUS_CHAT_DEAD. */
export const CHAT_DEAD_LETTER_STREAM = "TOOLBUS_CHAT_DEAD";
export const CHAT_DEAD_LETTER_SUBJECT = `${SUBJECT_PREFIX}.deadletter.chat`;
/** The durable consumer of one partition. */
export const chatConsumerName = (partition: number): string => `chat-log-writer-${partition}`;
/** The KV bucket of partition leases: key `p<n>`, value the writer's id. */
export const CHAT_LEASES_BUCKET = "toolbus_chat_leases";
/** The KV bucket of each partition's last known ack floor (key `p<n>`), kept while its consumer is made afresh. */
export const CHAT_FLOORS_BUCKET = "toolbus_chat_floors";

/**
 * Conversation ids are subject tokens and file names: letters, digits, `_` and `-`, 1 to 100 of them.
 * (UUIDs, ULIDs and most ids fit; `../etc` or `a.b` cannot be written anywhere by mistake. 100, because
 * a capital or `_` takes two characters in the file name, which with `.jsonl.lock` must fit in 255.)
 */
export const CONVERSATION_ID_PATTERN = /^[A-Za-z0-9_-]{1,100}$/;
export const ConversationIdSchema = z.string().regex(CONVERSATION_ID_PATTERN, "conversation ids are 1-100 of A-Z, a-z, 0-9, '_' and '-'");

/** The partition of a conversation (FNV-1a of its id): fixed, so every producer and writer agrees. */
export function chatPartitionOf(conversationId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < conversationId.length; i++) {
    hash ^= conversationId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % CHAT_PARTITIONS;
}

/** The subject a conversation's events are published to. */
export function chatSubject(conversationId: string): string {
  if (!CONVERSATION_ID_PATTERN.test(conversationId)) throw new TypeError(`invalid conversation id ${JSON.stringify(conversationId)}`);
  return `${SUBJECT_PREFIX}.chat.${chatPartitionOf(conversationId)}.${conversationId}`;
}

/** The subjects of one partition (a consumer's filter). */
export const chatPartitionSubjects = (partition: number): string => `${SUBJECT_PREFIX}.chat.${partition}.*`;

/**
 * A conversation's file name. Two ids never share one, even on a file system that ignores case: the
 * name is lower case, with `_` written `__` and each capital `X` written `_x`.
 */
export function chatFileName(conversationId: string): string {
  if (!CONVERSATION_ID_PATTERN.test(conversationId)) throw new TypeError(`invalid conversation id ${JSON.stringify(conversationId)}`);
  return `${conversationId.replace(/_/g, "__").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}.jsonl`;
}

/** The conversation id a file name was made from (undefined for any other file). */
export function conversationOfFile(fileName: string): string | undefined {
  const m = /^((?:[a-z0-9-]|__|_[a-z])+)\.jsonl$/.exec(fileName);
  if (!m) return undefined;
  const id = m[1]!.replace(/__|_([a-z])/g, (all, c: string | undefined) => (c === undefined ? "_" : c.toUpperCase()));
  return CONVERSATION_ID_PATTERN.test(id) ? id : undefined;
}

/** UTC, ISO-8601, ending in `Z` (what `Date.prototype.toISOString` gives). */
const UTC_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/** The kinds of event toolbus itself produces; others (lower-case words) are welcome too. */
export const ChatEventType = {
  user_message: "user_message",
  assistant_message: "assistant_message",
  tool_call: "tool_call",
  tool_result: "tool_result",
  error: "error",
} as const;

/** One chat event; the writer appends it, as it is, as one line of `<conversation>.jsonl`. */
export const ChatEventSchema = z.object({
  /** UUIDv7 (newEventId): unique, and sorts by time. Also the JetStream de-duplication id. */
  id: z.string().min(1).max(128),
  conversationId: ConversationIdSchema,
  type: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, "event types are lower-case words (user_message, tool_call, ...)"),
  timestamp: z.string().regex(UTC_TIMESTAMP, "timestamps are UTC ISO-8601 ending in Z (new Date().toISOString())"),
  payload: z.unknown(),
  meta: z.record(z.string(), z.unknown()).optional(),
});
export type ChatEvent = z.infer<typeof ChatEventSchema>;

/** Why an event went to the dead-letter subject (published there as `{reason, message, subject, sequence, time, data}`). */
export const ChatDeadLetterSchema = z.object({
  reason: z.enum(["not_json", "invalid_event", "wrong_subject", "too_large"]),
  message: z.string(),
  subject: z.string(),
  /** The event's sequence in TOOLBUS_CHAT. */
  sequence: z.number().int().nonnegative(),
  time: z.string(),
  /** The first bytes of the event, base64. */
  data: z.string(),
  /** Its whole size in bytes. */
  size: z.number().int().nonnegative(),
});
export type ChatDeadLetter = z.infer<typeof ChatDeadLetterSchema>;

let lastMs = 0;
let sequence = 0;
/** Random bytes drawn 4 KiB at a time: one call to the system's generator per 400 ids, not two per id. */
let pool = Buffer.alloc(0);
let poolAt = 0;
function random(n: number): Buffer {
  if (poolAt + n > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  poolAt += n;
  return pool.subarray(poolAt - n, poolAt);
}

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix ms, then a counter, so ids made by one process sort in the
 * order they were made, even within a millisecond.
 */
export function newEventId(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    sequence = random(2).readUInt16BE() & 0x7ff;
  } else {
    sequence += 1;
    if (sequence > 0xfff) {
      // 4,096 ids in one ms: borrow the next ms rather than break the order.
      lastMs += 1;
      sequence = 0;
    }
  }
  // A copy: the pool's bytes are not to be written over.
  const bytes = Buffer.from(random(16));
  bytes.writeUIntBE(lastMs, 0, 6);
  bytes[6] = 0x70 | (sequence >> 8);
  bytes[7] = sequence & 0xff;
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
