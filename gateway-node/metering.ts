/**
 * Per-tunnel metering against a credential's cap. Each tunnel spends a byte budget leased from
 * Redis (shared/lua/lease_bytes.lua): the budgets of all live tunnels together never exceed what is
 * left under the cap, a tunnel that runs dry pauses until it gets more, and a credential with
 * nothing left is suspended by the same script. The overshoot past the cap is therefore at most
 * the chunks already in flight when a budget hit zero (one socket read per direction, <= 64 KiB
 * each), far under the 1 MiB per tunnel target.
 */
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { leaseBytes } from "../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../shared/redis.ts";

export interface MeterDeps {
  redis: Pick<RedisClient, "evalsha" | "eval">;
  now: () => number;
  leaseBytes: number;
  flushMs: number;
  onBytes?: (n: number) => void;
}

export class TunnelMeter {
  readonly keyId: string;
  readonly tunnelId: string;
  /** bytes this tunnel may still move before it must lease more */
  budget = 0;
  /** bytes moved since the last report to Redis */
  private pending = 0;
  private inflight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private exhausted = false;
  private readonly deps: MeterDeps;
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
  }

  /** Leases the first budget; false when the credential has nothing left (E_CAP_EXCEEDED). */
  async start(): Promise<boolean> {
    const r = await this.call(0, this.deps.leaseBytes, false);
    if (r.granted <= 0) {
      await this.call(0, 0, true).catch(() => {});
      return false;
    }
    this.budget = r.granted;
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
    if (this.budget < this.deps.leaseBytes / 2) this.flush();
  }

  /** Reports usage and tops the budget up; at most one call in flight. */
  flush(): void {
    if (this.closed || this.inflight) return;
    const want = Math.max(0, this.deps.leaseBytes - Math.max(0, this.budget));
    if (this.pending === 0 && want < this.deps.leaseBytes / 2) return;
    const reported = this.pending;
    this.pending = 0;
    this.inflight = this.call(reported, want, false)
      .then((r) => {
        this.budget += r.granted;
        if (this.budget > 0 && this.exhausted) {
          this.exhausted = false;
          this.onResume();
        } else if (this.budget <= 0 && (r.granted === 0 || !r.enabled)) {
          this.onCapReached();
        } else if (this.budget <= 0) {
          // a grant smaller than what was in flight: still dry, ask again once this call settles
          setImmediate(() => this.flush());
        }
      })
      .catch(() => {
        // Redis hiccup: keep the bytes for the next report so none go unbilled.
        this.pending += reported;
        if (this.budget <= 0) setTimeout(() => this.flush(), 250).unref();
      })
      .finally(() => {
        this.inflight = undefined;
      });
  }

  /** Final report and returns the unspent budget; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.inflight?.catch(() => {});
    const reported = this.pending;
    this.pending = 0;
    await this.call(reported, 0, true).catch(() => {});
  }

  private async call(
    consumed: number,
    want: number,
    close: boolean,
  ): Promise<{ granted: number; used: number; enabled: boolean }> {
    const r = (await runScript(
      this.deps.redis,
      leaseBytes,
      [
        keys.credential(this.keyId),
        keys.credentialUsed(this.keyId),
        keys.credentialLeases(this.keyId),
        keys.credentialSuspendedEvents(),
      ],
      [
        this.keyId,
        this.tunnelId,
        consumed,
        want,
        this.deps.now(),
        Math.max(10_000, this.deps.flushMs * 10),
        close ? "close" : "",
      ],
    )) as number[];
    return { granted: Number(r[0]), used: Number(r[1]), enabled: Number(r[2]) === 1 };
  }
}
