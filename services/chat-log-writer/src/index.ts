export { startChatLogWriter } from "./writer.js";
export type { ChatLogWriterOptions, ChatLogWriterWorker } from "./writer.js";
export { ConversationFiles, tailIds } from "./files.js";
