/**
 * Per-tunnel metering against a credential's cap. Each tunnel spends a byte budget leased from
 * Redis (shared/lua/lease_bytes.lua): the budgets of all live tunnels together never exceed what is
 * left under the cap, a tunnel that runs dry pauses until it gets more, and a credential with
 * nothing left is suspended by the same script. The overshoot past the cap is therefore at most
 * the chunks already in flight when a budget hit zero (one socket read per direction, <= 64 KiB
 * each), far under the 1 MiB per tunnel target. Idle tunnels renew their lease too, so no lease
 * lapses while its tunnel still holds the bytes locally, and every report carries a sequence
 * number so a retry never bills twice.
 *
 * A fast tunnel's lease grows: when half of it is spent within LEASE_GROW_WITHIN_MS of its grant,
 * the next ask is twice as large, up to `maxLeaseBytes`. With a fixed 256 KiB a tunnel asked Redis
 * every 128 KiB, and one whose bytes outran a round trip paused for it: at most 64 MB/s over a 2 ms
 * round trip to Upstash, 13 MB/s over 10 ms. Leases are still taken from what is left under the
 * cap, so a larger one never lets a credential past it; it only holds more of the remainder.
 */
import { keys } from "../shared/keys.ts";
import type { Logger } from "../shared/log.ts";
import { runScript } from "../shared/lua/script.ts";
import { leaseBytes } from "../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../shared/redis.ts";

export interface MeterDeps {
  redis: Pick<RedisClient, "evalsha" | "eval">;
  now: () => number;
  /** the first lease of a tunnel */
  leaseBytes: number;
  /** the most a fast tunnel's lease grows to (default leaseBytes: no growth) */
  maxLeaseBytes?: number;
  flushMs: number;
  onBytes?: (n: number) => void;
  /** Where a lost final usage report is said (default: stderr). */
  log?: Pick<Logger, "error">;
}

/** How often a final report is tried before its bytes are given up on (logged). */
const FINAL_REPORT_ATTEMPTS = 6;

/** Half a lease spent this soon after its grant doubles the next one (up to maxLeaseBytes). */
export const LEASE_GROW_WITHIN_MS = 100;

export class TunnelMeter {
  readonly keyId: string;
  readonly tunnelId: string;
  /** bytes this tunnel may still move before it must lease more */
  budget = 0;
  /** bytes moved since the last report was cut */
  private pending = 0;
  /** per-tunnel report sequence: a retried report repeats its number, so Redis applies it once */
  private seq = 0;
  /** a report sent whose answer never came: resent as is (same seq, same bytes) before any other */
  private unacked: { seq: number; consumed: number } | undefined;
  /** when Redis last heard from this tunnel (ms): an idle tunnel still renews its lease in time */
  private lastCallAt = 0;
  /** what this tunnel asks Redis for: deps.leaseBytes, grown for a fast tunnel */
  lease: number;
  private inflight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private exhausted = false;
  private readonly deps: MeterDeps;
  private readonly leaseTtlMs: number;
  /** total bytes this tunnel moved, both directions */
  total = 0;
  /** set by the splice: stop reading while the budget is empty */
  onPause: () => void = () => {};
  onResume: () => void = () => {};
  /** the credential has nothing left: close the tunnel */
  onCapReached: () => void = () => {};

  constructor(deps: MeterDeps, keyId: string, tunnelId: string) {
    this.deps = deps;
    this.keyId = keyId;
    this.tunnelId = tunnelId;
    this.leaseTtlMs = Math.max(10_000, deps.flushMs * 10);
    this.lease = deps.leaseBytes;
  }

  /** Leases the first budget; false when the credential has nothing left (E_CAP_EXCEEDED). */
  async start(): Promise<boolean> {
    const r = await this.call(0, this.deps.leaseBytes, false, ++this.seq);
    if (r.granted <= 0) {
      await this.call(0, 0, true, ++this.seq).catch(() => {});
      return false;
    }
    this.budget = r.outstanding;
    this.timer = setInterval(() => this.flush(), this.deps.flushMs);
    this.timer.unref();
    return true;
  }

  /** Counts bytes that just moved; synchronous so the splice can pause in the same tick. */
  consume(n: number): void {
    if (n <= 0) return;
    this.budget -= n;
    this.pending += n;
    this.total += n;
    this.deps.onBytes?.(n);
    if (this.budget <= 0) {
      this.exhausted = true;
      this.onPause();
    }
    if (this.budget < this.lease / 2) this.flush();
  }

  /**
   * Reports usage and tops the budget up; at most one call in flight. Also runs for an idle tunnel
   * once a third of its lease has passed: a lease that lapsed would let another tunnel reclaim the
   * bytes this one still holds locally, and both would spend them (issue 16 item 4).
   */
  flush(): void {
    if (this.closed || this.inflight) return;
    const now = this.deps.now();
    const max = Math.max(this.deps.leaseBytes, this.deps.maxLeaseBytes ?? 0);
    if (this.budget < this.lease / 2 && now - this.lastCallAt < LEASE_GROW_WITHIN_MS && this.lease < max)
      this.lease = Math.min(max, this.lease * 2);
    const want = Math.max(0, this.lease - Math.max(0, this.budget));
    const renewDue = now - this.lastCallAt >= this.leaseTtlMs / 3;
    if (!this.unacked && this.pending === 0 && want < this.lease / 2 && !renewDue) return;
    if (!this.unacked) {
      this.unacked = { seq: ++this.seq, consumed: this.pending };
      this.pending = 0;
    }
    const report = this.unacked;
    this.inflight = this.call(report.consumed, want, false, report.seq)
      .then((r) => {
        this.unacked = undefined;
        // Redis is the authority on what this tunnel may still spend: a lease that lapsed comes
        // back as 0 outstanding, and the local budget goes with it.
        this.budget = r.outstanding - this.pending;
        if (this.budget > 0 && this.exhausted) {
          this.exhausted = false;
          this.onResume();
        } else if (this.budget <= 0 && (r.granted === 0 || !r.enabled)) {
          this.exhausted = true;
          this.onPause();
          this.onCapReached();
        } else if (this.budget <= 0) {
          // a grant smaller than what was in flight: still dry, ask again once this call settles
          setImmediate(() => this.flush());
        }
      })
      .catch(() => {
        // Redis hiccup (or a lost answer): the same report is resent with its sequence number, so
        // it is billed once whether or not the first attempt landed.
        if (this.budget <= 0) setTimeout(() => this.flush(), 250).unref();
      })
      .finally(() => {
        this.inflight = undefined;
      });
  }

  /** Final report (retried with backoff, idempotent by sequence) and returns the unspent budget. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.inflight?.catch(() => {});
    const final = { seq: 0, consumed: 0 };
    for (let attempt = 0; attempt < FINAL_REPORT_ATTEMPTS; attempt++) {
      try {
        if (this.unacked) {
          await this.call(this.unacked.consumed, 0, false, this.unacked.seq);
          this.unacked = undefined;
        }
        if (final.seq === 0) {
          final.seq = ++this.seq;
          final.consumed = this.pending;
          this.pending = 0;
        }
        await this.call(final.consumed, 0, true, final.seq);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
    const fields = { tunnelId: this.tunnelId, keyId: this.keyId, attempts: FINAL_REPORT_ATTEMPTS };
    if (this.deps.log) this.deps.log.error(fields, "final usage report failed");
    else console.error(JSON.stringify({ level: "error", ...fields, msg: "final usage report failed" }));
  }

  private async call(
    consumed: number,
    want: number,
    close: boolean,
    seq: number,
  ): Promise<{ granted: number; used: number; enabled: boolean; outstanding: number }> {
    const r = (await runScript(
      this.deps.redis,
      leaseBytes,
      [
        keys.credential(this.keyId),
        keys.credentialUsed(this.keyId),
        keys.credentialLeases(this.keyId),
        keys.credentialSuspendedEvents(),
        keys.credentialLeaseSum(this.keyId),
        keys.credentialLeaseExpiry(this.keyId),
      ],
      [
        this.keyId,
        this.tunnelId,
        consumed,
        want,
        this.deps.now(),
        this.leaseTtlMs,
        close ? "close" : "",
        seq,
      ],
    )) as number[];
    this.lastCallAt = this.deps.now();
    return {
      granted: Number(r[0]),
      used: Number(r[1]),
      enabled: Number(r[2]) === 1,
      outstanding: Number(r[3] ?? 0),
    };
  }
}
