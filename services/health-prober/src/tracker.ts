import type { HealthDefaults } from "@toolbus/config";
import { HealthState } from "@toolbus/protocol";

/** One probe's outcome. */
export type ProbeResult = { ok: true; latencyMs: number } | { ok: false; reason: string };

export interface Transition {
  state: HealthState;
  previous: HealthState;
  reason: string;
}

/**
 * The health of one endpoint, from its probes: never unhealthy on one failed probe (only after
 * `unhealthyAfter` in a row), healthy again only after `healthyAfter` successes in a row, degraded
 * while probes succeed slower than `degradedMs`. Pure: the prober feeds it results and publishes
 * the transitions it returns.
 */
export class HealthTracker {
  #state: HealthState = HealthState.unknown;
  #previous: HealthState = HealthState.unknown;
  #failures = 0;
  #successes = 0;
  #since: number;
  #reason = "not probed yet";
  #latencyMs: number | null = null;

  constructor(
    private readonly thresholds: Pick<HealthDefaults, "unhealthyAfter" | "healthyAfter" | "degradedMs">,
    now = Date.now(),
  ) {
    this.#since = now;
  }

  get state(): HealthState {
    return this.#state;
  }
  /** The state before the last change. */
  get previous(): HealthState {
    return this.#previous;
  }
  get since(): number {
    return this.#since;
  }
  get reason(): string {
    return this.#reason;
  }
  /** The last successful probe's round trip. */
  get latencyMs(): number | null {
    return this.#latencyMs;
  }

  /** Record a probe; returns the transition it caused, if any. */
  record(result: ProbeResult, now = Date.now()): Transition | undefined {
    const { unhealthyAfter, healthyAfter, degradedMs } = this.thresholds;
    if (result.ok) {
      this.#latencyMs = result.latencyMs;
      this.#failures = 0;
      this.#successes++;
      const fast = result.latencyMs <= degradedMs;
      this.#reason = fast ? `answered in ${Math.round(result.latencyMs)} ms` : `answered in ${Math.round(result.latencyMs)} ms, over ${degradedMs} ms`;
      // From unknown, the first answer decides; from unhealthy (or lost), it takes `healthyAfter` in a row.
      const down = this.#state === HealthState.unhealthy || this.#state === HealthState.lost;
      if (down && this.#successes < healthyAfter) return undefined;
      return this.#move(fast ? HealthState.healthy : HealthState.degraded, now);
    }
    this.#successes = 0;
    this.#failures++;
    this.#reason = result.reason;
    // Lost stays lost until it answers again.
    if (this.#failures >= unhealthyAfter && this.#state !== HealthState.lost) return this.#move(HealthState.unhealthy, now);
    // Before the first answer, failures leave it unknown until they are enough to call it unhealthy.
    return undefined;
  }

  /** Not found anywhere after every rediscovery attempt. */
  markLost(reason: string, now = Date.now()): Transition | undefined {
    // Only from unhealthy: an endpoint the probes found again meanwhile is not lost.
    if (this.#state !== HealthState.unhealthy) return undefined;
    this.#successes = 0;
    this.#reason = reason;
    return this.#move(HealthState.lost, now);
  }

  #move(state: HealthState, now: number): Transition | undefined {
    if (state === this.#state) return undefined;
    const previous = this.#state;
    this.#previous = previous;
    this.#state = state;
    this.#since = now;
    return { state, previous, reason: this.#reason };
  }
}
