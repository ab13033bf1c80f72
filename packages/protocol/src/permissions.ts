import { CHAT_DEAD_LETTER_SUBJECT, CHAT_FLOORS_BUCKET, CHAT_LEASES_BUCKET, CHAT_STREAM } from "./chat.js";
import { SUBJECT_PREFIX, isBackendName, kvBuckets, subjects } from "./subjects.js";

/**
 * Who may publish and subscribe to what on NATS, per worker: the permission set a NATS server enforces
 * for each toolbus user (`toolbus deploy render` writes it as nats-server `authorization` users). The
 * lines that matter most: only a backend's callers take its calls and cancels; a client publishes
 * requests and reads its replies and events, nothing else.
 */
export interface NatsPermissions {
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
}

/** A NATS user of toolbus: a worker kind (a caller per backend, with the LLM fallbacks it may forward to), or a client. */
export type NatsRole =
  | { readonly kind: "router" | "cache" | "health-prober" | "chat-log-writer" | "gateway" | "client" }
  | { readonly kind: "caller"; readonly backend: string; readonly fallbacks?: readonly string[] };

/** The NATS user name of a role: the worker's name, `caller-<backend>`, or `client`. */
export function natsUserOf(role: NatsRole): string {
  return role.kind === "caller" ? `caller-${role.backend}` : role.kind;
}

const P = SUBJECT_PREFIX;
/** Replies and progress go to the requester's inbox; every worker answers the services API ($SRV.PING/INFO/STATS). */
const INBOX = "_INBOX.>";
const SERVICES = "$SRV.>";
/** The JetStream API and flow control, for workers that keep state in streams and KV buckets. */
const JETSTREAM = ["$JS.API.>", "$JS.FC.>"];
const kv = (bucket: string): string => `$KV.${bucket}.>`;
/** Requests any client (and the front door, which is one) may send. */
const CLIENT_REQUESTS = [
  subjects.toolCall(),
  subjects.toolsList(),
  subjects.llmChat(),
  `${P}.backend.*.call`,
  `${P}.backend.*.chat`,
  `${P}.backend.*.tools`,
  `${P}.backend.*.mcp`,
  `${P}.cancel.*`,
  subjects.llmCancel(),
  subjects.cacheInvalidate(),
  subjects.cacheStatus(),
  subjects.callerStatus(),
  subjects.healthGet(),
  // Chat events, stored by the stream (the ack comes to the inbox), and the stream's info when it does not answer.
  `${P}.chat.*.*`,
  `$JS.API.STREAM.INFO.${CHAT_STREAM}`,
];

export function natsPermissions(role: NatsRole): NatsPermissions {
  switch (role.kind) {
    case "client":
      return { publish: [...CLIENT_REQUESTS, INBOX], subscribe: [INBOX, `${P}.evt.>`] };
    case "gateway":
      return {
        publish: [...CLIENT_REQUESTS, subjects.gatewayCancel(), subjects.callerDiscovery(), ...JETSTREAM, kv(kvBuckets.gatewaySessions), INBOX],
        subscribe: [INBOX, SERVICES, `${P}.evt.>`, subjects.gatewayCancel()],
      };
    case "router":
      return {
        publish: [
          `${P}.backend.*.call`,
          `${P}.backend.*.chat`,
          `${P}.backend.*.tools`,
          subjects.cacheLookup(),
          subjects.callerDiscovery(),
          subjects.cacheDiscovery(),
          INBOX,
        ],
        subscribe: [subjects.toolCall(), subjects.toolsList(), subjects.llmChat(), `${P}.evt.>`, `${P}.cache.ack.*`, INBOX, SERVICES],
      };
    case "cache":
      return {
        publish: [`${P}.backend.*.call`, `${P}.cache.ack.*`, subjects.cacheInvalidated(), subjects.cacheHeartbeat(), ...JETSTREAM, kv(kvBuckets.cache), INBOX],
        subscribe: [
          subjects.cacheLookup(),
          subjects.cacheSet(),
          subjects.cacheInvalidate(),
          subjects.cacheDiscovery(),
          subjects.cacheStatus(),
          `${P}.evt.>`,
          INBOX,
          SERVICES,
        ],
      };
    case "health-prober":
      return {
        publish: [`${P}.evt.health.*`, `${P}.evt.endpoint.*`, ...JETSTREAM, kv(kvBuckets.health), kv(kvBuckets.healthLeases), kv(kvBuckets.endpoints), INBOX],
        subscribe: [subjects.healthGet(), subjects.healthReportAll(), `${P}.evt.>`, INBOX, SERVICES],
      };
    case "chat-log-writer":
      return {
        publish: [CHAT_DEAD_LETTER_SUBJECT, ...JETSTREAM, "$JS.ACK.>", kv(CHAT_LEASES_BUCKET), kv(CHAT_FLOORS_BUCKET), INBOX],
        subscribe: [INBOX, SERVICES],
      };
    case "caller": {
      const b = role.backend;
      if (!isBackendName(b)) throw new TypeError(`invalid backend name ${JSON.stringify(b)}`);
      return {
        publish: [
          subjects.callerHeartbeat(b),
          subjects.breakerEvents(b),
          subjects.backendChanged(b),
          subjects.healthReport(b),
          subjects.llmUsage(b),
          subjects.cacheSet(),
          `${P}.chat.*.*`,
          // An LLM caller forwards a chat it cannot answer to its fallbacks' callers, and only to them.
          ...(role.fallbacks ?? []).map((f) => subjects.backendChat(f)),
          ...JETSTREAM,
          INBOX,
        ],
        subscribe: [
          `${P}.backend.${b}.>`,
          subjects.cancelCall(b),
          subjects.llmCancel(),
          subjects.llmUsage(b),
          subjects.callerDiscovery(),
          subjects.callerStatus(),
          subjects.callerHeartbeatAll(),
          subjects.healthEvents(b),
          subjects.endpointEvents(b),
          INBOX,
          SERVICES,
        ],
      };
    }
  }
}
