import type { Job } from "./guard.ts";

/** Proves the cron is alive: one row whose beat_at moves every minute. */
export const heartbeatJob: Job = {
  name: "heartbeat",
  maxRunsPerHour: 120,
  async run(deps) {
    const { rows } = await deps.db.query<{ beats: string }>(
      `INSERT INTO cron_heartbeat (id, beat_at, beats) VALUES (1, $1, 1)
       ON CONFLICT (id) DO UPDATE SET beat_at = EXCLUDED.beat_at, beats = cron_heartbeat.beats + 1
       RETURNING beats`,
      [deps.now().toISOString()],
    );
    return { beats: Number(rows[0]?.beats ?? 0) };
  },
};
