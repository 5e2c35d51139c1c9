/**
 * Runaway caps for the long-lived loops (the prober, the fleet watchdog), like the API jobs' run cap
 * (functions/src/jobs/guard.ts): a loop that would act more than its cap in one UTC hour stops
 * acting until the next hour and records `skipped: run_cap` in job_runs once. Counted in the
 * process (each of these loops is one process; a runaway is a bug or a misconfiguration in it).
 */
import type { Queryable } from "./db/pool.ts";

export class HourlyCap {
  private hour = "";
  private count = 0;
  private recorded = "";
  readonly loop: string;
  readonly cap: number;
  private readonly now: () => number;
  constructor(loop: string, cap: number, now: () => number) {
    this.loop = loop;
    this.cap = cap;
    this.now = now;
  }

  private roll(): void {
    const hour = new Date(this.now()).toISOString().slice(0, 13);
    if (hour !== this.hour) {
      this.hour = hour;
      this.count = 0;
    }
  }

  /** Actions left this hour. */
  left(): number {
    this.roll();
    return Math.max(0, this.cap - this.count);
  }

  /** Counts `n` actions. */
  spend(n = 1): void {
    this.roll();
    this.count += n;
  }

  /** Records the skip once per hour; true when this call recorded it (log it then). */
  async recordSkip(db: Queryable | null): Promise<boolean> {
    this.roll();
    if (this.recorded === this.hour) return false;
    this.recorded = this.hour;
    await db
      ?.query("INSERT INTO job_runs (job, finished_at, status, detail) VALUES ($1, now(), 'skipped', $2)", [
        this.loop,
        JSON.stringify({ reason: "run_cap", cap: this.cap }),
      ])
      .catch(() => {});
    return true;
  }
}
