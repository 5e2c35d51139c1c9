import { describe, expect, it } from "vitest";
import { applyProbe, type GateState, gateFromHash, gateToHash, INITIAL_GATE } from "./gate.ts";

const P = { ok: true, breaker: false };
const F = { ok: false, breaker: false };
const BF = { ok: false, breaker: true };

function run(results: { ok: boolean; breaker: boolean }[], from: GateState = INITIAL_GATE) {
  let s = from;
  const seen: string[] = [];
  for (const r of results) {
    const o = applyProbe(s, r);
    s = o.next;
    seen.push(...o.transitions);
  }
  return { state: s, seen };
}

describe("admission gate", () => {
  it.each([
    { name: "one pass does not admit", seq: [P], verified: false, seen: [] },
    { name: "two clean passes in a row admit", seq: [P, P], verified: true, seen: ["admitted"] },
    { name: "a failure between passes resets the pass streak", seq: [P, F, P], verified: false, seen: [] },
    {
      name: "two failures keep a verified endpoint verified",
      seq: [P, P, F, F],
      verified: true,
      seen: ["admitted"],
    },
    {
      name: "three failures in a row demote",
      seq: [P, P, F, F, F],
      verified: false,
      seen: ["admitted", "demoted"],
    },
    {
      name: "a pass resets the failure streak",
      seq: [P, P, F, F, P, F, F],
      verified: true,
      seen: ["admitted"],
    },
    {
      name: "readmission is history-free: two passes after demotion admit again",
      seq: [P, P, F, F, F, F, F, F, P, P],
      verified: true,
      seen: ["admitted", "demoted", "admitted"],
    },
    {
      name: "failures on a never-admitted endpoint never emit demoted",
      seq: [F, F, F, F],
      verified: false,
      seen: [],
    },
  ])("$name", ({ seq, verified, seen }) => {
    const out = run(seq);
    expect(out.state.verified).toBe(verified);
    expect(out.seen).toEqual(seen);
  });

  it("streak counters follow the last run of equal results", () => {
    expect(run([P, P, P]).state).toMatchObject({ passStreak: 3, failStreak: 0 });
    expect(run([P, P, P, F, F]).state).toMatchObject({ passStreak: 0, failStreak: 2 });
  });

  it("a failed breaker re-probe pauses and delists at once, even while still verified", () => {
    const admitted = run([P, P]).state;
    const o = applyProbe(admitted, BF);
    expect(o.next).toEqual({ verified: true, passStreak: 0, failStreak: 1, paused: true });
    expect(o.transitions).toEqual(["paused"]);
    expect(o.delist).toBe(true);
  });

  it("a passing breaker re-probe changes nothing but the streak", () => {
    const o = applyProbe(run([P, P]).state, { ok: true, breaker: true });
    expect(o.transitions).toEqual([]);
    expect(o.delist).toBe(false);
  });

  it("a paused endpoint stays paused through scheduled failures and unpauses on its next pass", () => {
    const paused = applyProbe(run([P, P]).state, BF).next;
    const f = applyProbe(paused, F);
    expect(f.next.paused).toBe(true);
    expect(f.transitions).toEqual([]);
    const p = applyProbe(f.next, P);
    expect(p.next.paused).toBe(false);
    expect(p.transitions).toEqual(["unpaused"]);
  });

  it("demotion asks for delisting; a plain failure does not", () => {
    const two = run([P, P, F, F]).state;
    expect(applyProbe(run([P, P]).state, F).delist).toBe(false);
    expect(applyProbe(two, F).delist).toBe(true);
  });

  it("round-trips through the probe hash and reads a missing hash as never probed", () => {
    const s: GateState = { verified: true, passStreak: 4, failStreak: 0, paused: false };
    expect(gateFromHash(gateToHash(s))).toEqual(s);
    expect(gateFromHash({})).toEqual(INITIAL_GATE);
  });
});
