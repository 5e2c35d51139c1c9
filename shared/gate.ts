/**
 * The admission gate (docs/internal.md "Probe state"), in pure code so every rule is a table test:
 * two clean passes in a row admit, three failures in a row demote, readmission is history-free
 * (only the current streak counts), and the circuit breaker pauses an endpoint whose re-probe fails.
 */

export interface GateState {
  verified: boolean;
  passStreak: number;
  failStreak: number;
  /** circuit breaker: paused for selection until the endpoint passes a probe again */
  paused: boolean;
}

export interface GateInput {
  ok: boolean;
  /** true when the probe was fired by the circuit breaker (a gateway reported a failure) */
  breaker: boolean;
}

export type GateTransition = "admitted" | "demoted" | "paused" | "unpaused";

export interface GateOutcome {
  next: GateState;
  /** what changed, in the order it happened; empty when nothing that matters to the pool changed */
  transitions: GateTransition[];
  /** the endpoint must come off sale now (demoted or paused), not at the next cron */
  delist: boolean;
}

export const ADMIT_AFTER_PASSES = 2;
export const DEMOTE_AFTER_FAILURES = 3;

export const INITIAL_GATE: GateState = { verified: false, passStreak: 0, failStreak: 0, paused: false };

/** The gate's next state for one probe result. */
export function applyProbe(prev: GateState, input: GateInput): GateOutcome {
  const transitions: GateTransition[] = [];
  if (input.ok) {
    const passStreak = prev.passStreak + 1;
    const verified = prev.verified || passStreak >= ADMIT_AFTER_PASSES;
    if (verified && !prev.verified) transitions.push("admitted");
    if (prev.paused) transitions.push("unpaused");
    return { next: { verified, passStreak, failStreak: 0, paused: false }, transitions, delist: false };
  }
  const failStreak = prev.failStreak + 1;
  const verified = prev.verified && failStreak < DEMOTE_AFTER_FAILURES;
  if (prev.verified && !verified) transitions.push("demoted");
  // A failed breaker re-probe confirms what a customer just saw: pause at once, without waiting
  // for the third failure that demotion needs.
  const paused = prev.paused || input.breaker;
  if (paused && !prev.paused) transitions.push("paused");
  return {
    next: { verified, passStreak: 0, failStreak, paused },
    transitions,
    delist: transitions.includes("demoted") || transitions.includes("paused"),
  };
}

/** Reads the gate fields of a probe:{endpointId} hash (missing fields = a never-probed endpoint). */
export function gateFromHash(h: Record<string, string>): GateState {
  return {
    verified: h.verified === "1",
    passStreak: Number(h.passStreak ?? 0) || 0,
    failStreak: Number(h.failStreak ?? 0) || 0,
    paused: h.paused === "1",
  };
}

export function gateToHash(s: GateState): Record<string, string> {
  return {
    verified: s.verified ? "1" : "0",
    passStreak: String(s.passStreak),
    failStreak: String(s.failStreak),
    paused: s.paused ? "1" : "0",
  };
}
