/** Reconnect timing (PROTOCOL.md section 2); every number is configurable so tests run fast. */
export interface BackoffPolicy {
  /** First delay (5 s), doubled per failed attempt. */
  baseMs: number;
  /** Ceiling of the doubled part (120 s). */
  maxMs: number;
  /**
   * Uniform jitter added on top: 0..jitterMs (2 s) on the first reconnect, then 0..half the
   * doubled delay (at least jitterMs), so a fleet whose relay was down a while does not come back
   * inside one 2 s window (200,000 sockets would).
   */
  jitterMs: number;
  /** A socket that stayed up this long (1 min) starts again from baseMs. */
  stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = {
  baseMs: 5_000,
  maxMs: 120_000,
  jitterMs: 2_000,
  stableMs: 60_000,
};

/** Delay before reconnect attempt number `attempt` (0-based); `random` is in [0, 1). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: number): number {
  const doubled = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(doubled + random * jitterWindow(policy, attempt));
}

/** Width of the uniform jitter of attempt `attempt`: 5 s + 0-2 s first, then up to +50%. */
export function jitterWindow(policy: BackoffPolicy, attempt: number): number {
  if (attempt <= 0) return policy.jitterMs;
  const doubled = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.max(policy.jitterMs, doubled / 2);
}

/** One socket's reconnect state: failed attempts since the last stable connection. */
export class Backoff {
  readonly policy: BackoffPolicy;
  #attempt = 0;
  #random: () => number;

  constructor(policy: BackoffPolicy, random: () => number = Math.random) {
    this.policy = policy;
    this.#random = random;
  }

  get attempt(): number {
    return this.#attempt;
  }

  /** Call when a socket closes after `upMs` of being open (0 if it never opened). */
  next(upMs: number): number {
    if (upMs >= this.policy.stableMs) this.#attempt = 0;
    const delay = backoffDelay(this.policy, this.#attempt, this.#random());
    this.#attempt++;
    return delay;
  }
}
