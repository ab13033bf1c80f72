/** Deployment profiles seed every default that depends on where toolbus runs. */
export const Profile = { local: "local", cloud: "cloud", hybrid: "hybrid" } as const;
export type Profile = (typeof Profile)[keyof typeof Profile];

export interface ProfileDefaults {
  /** Time to spawn/connect and initialize an MCP session. */
  connectTimeoutMs: number;
  /** Upper bound on one tool call when the request's budget is larger. */
  callTimeoutMs: number;
  /** Budget the CLI gives a call when no --timeout is set. */
  defaultBudgetMs: number;
  /** How often callers announce themselves to routers. */
  heartbeatMs: number;
}

/**
 * local: everything on one machine, so failures are detected fast.
 * cloud: backends across a network; tolerate latency and slow cold starts.
 * hybrid: local workers, some remote backends.
 */
export const PROFILE_DEFAULTS: Readonly<Record<Profile, Readonly<ProfileDefaults>>> = Object.freeze({
  local: Object.freeze({ connectTimeoutMs: 5_000, callTimeoutMs: 30_000, defaultBudgetMs: 30_000, heartbeatMs: 1_000 }),
  cloud: Object.freeze({ connectTimeoutMs: 15_000, callTimeoutMs: 60_000, defaultBudgetMs: 60_000, heartbeatMs: 2_000 }),
  hybrid: Object.freeze({ connectTimeoutMs: 10_000, callTimeoutMs: 45_000, defaultBudgetMs: 45_000, heartbeatMs: 1_000 }),
});
