// lease_bytes.lua keeps the sum of open leases and an expiry index beside the lease hash so a call
// no longer reads every entry (docs/adr/0024). This checks it against a model of the plain rule
// (scan every entry, reclaim the lapsed ones of other tunnels, grant at most cap - used - all
// outstanding) on random reports, closes, retries and lapses of many tunnels, in a real Redis: same
// answers, and the kept sum always equals the open entries' outstanding bytes.
import { afterAll, describe, expect, it } from "vitest";
import { stateEnv } from "../../test/helpers/env.ts";
import { randomHex } from "../ids.ts";
import { keys } from "../keys.ts";
import { tcpRedis } from "../redis.node.ts";
import { runScript } from "./script.ts";
import { leaseBytes } from "./scripts.gen.ts";

const redis = tcpRedis(stateEnv().REDIS_URL);
afterAll(() => redis.close());

interface Entry {
  amount: number;
  expiry: number;
  seq: number;
  closed: boolean;
}

/** The rule as the script stated it before the index: one pass over every entry per call. */
class Model {
  entries = new Map<string, Entry>();
  used = 0;
  enabled = true;
  readonly cap: number;
  constructor(cap: number) {
    this.cap = cap;
  }
  call(id: string, consumed: number, want: number, now: number, ttl: number, close: boolean, seq: number) {
    let own = 0;
    let lastSeq = 0;
    let closed = false;
    let others = 0;
    for (const [k, e] of [...this.entries]) {
      if (k === id) [own, lastSeq, closed] = [e.amount, e.seq, e.closed];
      else if (e.expiry <= now) this.entries.delete(k);
      else others += e.amount;
    }
    if (seq > lastSeq && consumed > 0) {
      this.used += consumed;
      own = Math.max(0, own - consumed);
    }
    if (closed || (seq <= lastSeq && close)) return [0, this.used, this.enabled ? 1 : 0, 0];
    lastSeq = Math.max(lastSeq, seq);
    if (this.enabled && this.used >= this.cap) this.enabled = false;
    if (!this.enabled || close) {
      this.entries.set(id, { amount: 0, expiry: now + ttl * 6, seq: lastSeq, closed: true });
      return [0, this.used, this.enabled ? 1 : 0, 0];
    }
    const grant = Math.max(0, Math.min(want, this.cap - this.used - others - own));
    this.entries.set(id, { amount: own + grant, expiry: now + ttl, seq: lastSeq, closed: false });
    return [grant, this.used, 1, own + grant];
  }
}

/** A small deterministic generator, so a failure can be replayed from its seed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

describe("lease_bytes.lua", () => {
  for (const seed of [1, 2, 3, 4, 5, 6])
    it(`answers as the scan-every-entry rule and keeps its sum exact (seed ${seed})`, async () => {
      const keyId = `lb_${randomHex(6)}`;
      const cap = 4_000_000;
      const ks = [
        keys.credential(keyId),
        keys.credentialUsed(keyId),
        keys.credentialLeases(keyId),
        // its own events list: the shared one is read by other files' gateways
        `events:cred_suspended:test:${keyId}`,
        keys.credentialLeaseSum(keyId),
        keys.credentialLeaseExpiry(keyId),
      ];
      await redis.raw.hset(ks[0]!, { enabled: "1", capBytes: String(cap) });
      const model = new Model(cap);
      const pick = rng(seed);
      const ttl = 1_000;
      let now = 1_000_000;
      const tunnels = Array.from({ length: 24 }, (_, i) => ({ id: `gw:${i}`, seq: 0, outstanding: 0 }));
      try {
        for (let step = 0; step < 400; step++) {
          now += pick(4) === 0 ? pick(3 * ttl) : pick(50); // sometimes long enough for leases to lapse
          const t = tunnels[pick(tunnels.length)]!;
          const retry = t.seq > 0 && pick(8) === 0; // a report whose first attempt did land
          if (!retry) t.seq++;
          const consumed = retry ? 0 : pick(t.outstanding + 20_000);
          const close = pick(6) === 0;
          const want = 64_000 + pick(200_000);
          const args = [keyId, t.id, consumed, want, now, ttl, close ? "close" : "", t.seq] as const;
          const got = (await runScript(redis, leaseBytes, ks, [...args])) as number[];
          const expected = model.call(t.id, consumed, want, now, ttl, close, t.seq);
          expect(got.map(Number), `step ${step}: ${JSON.stringify(args)}`).toEqual(expected);
          t.outstanding = Number(got[3]);
          // The kept sum is the open entries' outstanding bytes, as the hash has them now.
          const hash = await redis.raw.hgetall(ks[2]!);
          const open = Object.values(hash)
            .filter((v) => !v.endsWith(":c"))
            .reduce((sum, v) => sum + Math.max(0, Number(v.split(":")[0])), 0);
          expect(Number((await redis.raw.get(ks[4]!)) ?? 0), `sum after step ${step}`).toBe(open);
          if (!model.enabled) {
            // The cap was reached: start a new credential period as a top-up would.
            model.enabled = true;
            model.used = 0;
            await redis.raw.hset(ks[0]!, { enabled: "1" });
            await redis.raw.set(ks[1]!, "0");
          }
        }
      } finally {
        await redis.raw.del(...ks);
      }
    });
});
