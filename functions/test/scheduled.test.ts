import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { upstashRedis } from "../../shared/redis.ts";
import type { Job } from "../src/jobs/guard.ts";
import { runScheduled } from "../src/scheduled.ts";

const e = env as unknown as Record<string, string>;
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);

async function lastRuns(job: string) {
  const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
  try {
    const { rows } = await pool.query<{ status: string; detail: Record<string, unknown> }>(
      "SELECT status, detail FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT 5",
      [job],
    );
    return rows;
  } finally {
    await pool.end();
  }
}

describe("scheduled handler inside workerd", () => {
  it("runs the heartbeat job, which moves the heartbeat row forward", async () => {
    const [first] = await runScheduled(e);
    const [second] = await runScheduled(e);
    expect(first).toMatchObject({ job: "heartbeat", status: "ok" });
    expect(second!.detail.beats).toBe((first!.detail.beats as number) + 1);
  });

  it("a failing job is recorded as failed and does not stop the next job", async () => {
    const name = `t_fail_${crypto.randomUUID().slice(0, 8)}`;
    const failing: Job = { name, maxRunsPerHour: 10, run: async () => Promise.reject(new Error("boom")) };
    const ok: Job = { name: `${name}_ok`, maxRunsPerHour: 10, run: async () => ({ did: 1 }) };
    const out = await runScheduled(e, [failing, ok]);
    expect(out.map((o) => o.status)).toEqual(["failed", "ok"]);
    expect((await lastRuns(name))[0]).toMatchObject({ status: "failed", detail: { error: "boom" } });
  });

  it("the per-loop cap skips runs beyond it", async () => {
    const name = `t_cap_${crypto.randomUUID().slice(0, 8)}`;
    let ran = 0;
    const job: Job = { name, maxRunsPerHour: 2, run: async () => ({ ran: ++ran }) };
    for (let i = 0; i < 3; i++) await runScheduled(e, [job]);
    expect(ran).toBe(2);
    expect((await lastRuns(name))[0]).toMatchObject({ status: "skipped", detail: { reason: "run_cap" } });
  });

  it("the kill switch stops every job", async () => {
    const name = `t_kill_${crypto.randomUUID().slice(0, 8)}`;
    let ran = 0;
    const job: Job = { name, maxRunsPerHour: 10, run: async () => ({ ran: ++ran }) };
    await redis.set("ops:kill_switch", "test");
    try {
      const [out] = await runScheduled(e, [job]);
      expect(out).toMatchObject({ status: "skipped", detail: { reason: "kill_switch" } });
      expect(ran).toBe(0);
    } finally {
      await redis.del("ops:kill_switch");
    }
  });
});
