import {
  DELETED_USAGE_GRACE_S,
  drainSuspendedEvents,
  readCredentialState,
} from "../../../shared/credentials.ts";
import { withTransaction } from "../../../shared/db/pool.ts";
import type { Deps } from "../deps.ts";
import { appendAudit } from "../services/audit.ts";
import { expireCredentials, syncCredentialMirror } from "../services/credentials.ts";
import type { Job } from "./guard.ts";

// Per run: bounds the work one cron invocation does (the next minute takes the rest).
const MAX_EVENTS = 1000;
const MAX_EXPIRIES = 200;
const PAGE = 500;

/**
 * Disables keys whose expiry passed (the gateway already refuses them by expiresAt; this makes
 * Postgres, the API and the audit say so too). Records the gateway's cap suspensions (events:cred_suspended) in Postgres and the audit log, then
 * persists what each key used since the last run (credused:{id} minus used_bytes_persisted) into
 * credential_usage_daily. Bytes are attributed to the UTC day of the run, so a minute of traffic
 * around midnight may land on the next day.
 */
export const credentialUsageJob: Job = {
  name: "credential-usage",
  maxRunsPerHour: 120,
  async run(deps) {
    const expired = await withTransaction(deps.db, (tx) =>
      expireCredentials({ db: tx, now: deps.now }, MAX_EXPIRIES),
    );
    // Already committed; a key whose mirror write fails is still refused by the gateway's own
    // expiresAt check, and any later write re-syncs it.
    let mirrorFailures = 0;
    for (const id of expired) await syncCredentialMirror(deps, id).catch(() => mirrorFailures++);
    const suspended = await recordSuspensions(deps);
    const persisted = await persistUsage(deps);
    return { expired: expired.length, mirrorFailures, suspended, ...persisted };
  },
};

async function recordSuspensions(deps: Deps): Promise<number> {
  const ids = [...new Set(await drainSuspendedEvents(deps.redis, MAX_EVENTS))];
  if (ids.length === 0) return 0;
  const live = await readCredentialState(deps.redis, ids);
  let recorded = 0;
  for (const id of ids) {
    const state = live.get(id);
    // A topup may have re-enabled the key since the gateway pushed the event: the cache decides.
    if (!state?.cached || state.enabled || state.suspendedReason !== "cap") continue;
    const { rows } = await deps.db.query<{ cap_bytes: string }>(
      `UPDATE credentials SET enabled = false, suspended_reason = 'cap', updated_at = now()
        WHERE id = $1 AND deleted_at IS NULL AND (enabled OR suspended_reason IS DISTINCT FROM 'cap')
        RETURNING cap_bytes`,
      [id],
    );
    if (!rows[0]) continue;
    await appendAudit(deps.db, {
      actor: "gateway",
      action: "credential.suspend",
      subject: id,
      detail: { reason: "cap", usedBytes: String(state.usedBytes), capBytes: rows[0].cap_bytes },
    });
    recorded++;
  }
  return recorded;
}

async function persistUsage(deps: Deps): Promise<{ keys: number; deltaBytes: number }> {
  const day = deps.now().toISOString().slice(0, 10);
  let after = "";
  let keys = 0;
  let deltaBytes = 0;
  for (;;) {
    const { rows } = await deps.db.query<{ id: string; used_bytes_persisted: string }>(
      `SELECT id, used_bytes_persisted FROM credentials
        WHERE id > $1 AND (deleted_at IS NULL OR deleted_at > now() - make_interval(secs => $2))
        ORDER BY id LIMIT $3`,
      [after, DELETED_USAGE_GRACE_S, PAGE],
    );
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.id;
    const live = await readCredentialState(
      deps.redis,
      rows.map((r) => r.id),
    );
    const changed = rows
      .map((r) => ({ id: r.id, prev: Number(r.used_bytes_persisted), used: live.get(r.id)?.usedBytes ?? 0 }))
      // used < prev means the counter was lost (Redis reset): move the watermark, record nothing.
      .filter((r) => r.used !== r.prev && (r.used > 0 || live.get(r.id)?.cached));
    if (changed.length === 0) continue;
    // One statement: the watermark moves only if no concurrent run moved it first (prev matches),
    // and the day's bytes grow by exactly the delta that run claimed.
    const { rows: applied } = await deps.db.query<{ delta: string }>(
      `WITH d AS (
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(id, used, prev)
       ), moved AS (
         UPDATE credentials c SET used_bytes_persisted = d.used
           FROM d WHERE c.id = d.id AND c.used_bytes_persisted = d.prev
         RETURNING c.id, d.used - d.prev AS delta
       ), added AS (
         INSERT INTO credential_usage_daily (credential_id, day, bytes)
         SELECT id, $4::date, delta FROM moved WHERE delta > 0
         ON CONFLICT (credential_id, day) DO UPDATE SET bytes = credential_usage_daily.bytes + EXCLUDED.bytes
       )
       SELECT delta FROM moved WHERE delta > 0`,
      [changed.map((r) => r.id), changed.map((r) => String(r.used)), changed.map((r) => String(r.prev)), day],
    );
    keys += applied.length;
    for (const r of applied) deltaBytes += Number(r.delta);
  }
  return { keys, deltaBytes };
}
