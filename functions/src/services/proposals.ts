/**
 * Proposals (docs/adr/0018-ops-agent-actions-and-proposals.md): what an ops-agent asks for that only
 * a human may grant. A human operator's request executes at once; an ops-agent's files a `proposal`
 * approval, and a human approving it executes it inside the deciding transaction (row lock + status
 * check: exactly once however many approve at the same time). Every execution is audited.
 */
import type { ApiKeyScope } from "../../../shared/accounts.ts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";
import { publishDeviceRevocations, revokeDevicesOfKey } from "./devices.ts";
import { findModemExit, removeModemExit, syncModemListing } from "./modem-exits.ts";
import { getSetting } from "./settings.ts";

/** Settings rows a proposal may change: configuration the loops read, never money or auth. */
export const CONFIG_SETTINGS = [
  "listing_min_tier",
  "ops_agent_caps_per_hour",
  "mass_deletion_threshold",
] as const;

export type ProposalAction =
  | { action: "revoke_keys"; keyIds: string[] }
  | { action: "change_scopes"; keyId: string; scopes: ApiKeyScope[] }
  | { action: "delete_modem_exits"; ids: string[] }
  | { action: "set_setting"; key: (typeof CONFIG_SETTINGS)[number]; value: unknown }
  | { action: "set_device_region"; deviceId: string; region: string | null };

/** What an execution did, and the Redis work that must follow its commit (idempotent, retried by a repeat). */
export interface Execution {
  result: Record<string, unknown>;
  after: (deps: { redis: RedisClient; db: Queryable }) => Promise<void>;
}

/** The mass-deletion threshold: an ops-agent deleting more than this in one request files a proposal. */
export async function massDeletionThreshold(db: Queryable): Promise<number> {
  const v = await getSetting<number>(db, "mass_deletion_threshold", 3);
  return Number.isInteger(v) && v >= 0 ? v : 3;
}

/** Whether an ops-agent's request must wait for a human (true) or may run now (false). */
export async function needsApproval(db: Queryable, p: ProposalAction): Promise<boolean> {
  if (p.action === "delete_modem_exits") return p.ids.length > (await massDeletionThreshold(db));
  return true;
}

/** Runs a proposal inside the caller's transaction; `actor` is the key that executes (or approved) it. */
export async function executeProposal(tx: Queryable, p: ProposalAction, actor: string): Promise<Execution> {
  const audit = (action: string, subject: string | null, detail: Record<string, unknown>) =>
    appendAudit(tx, { actor, action, subject, detail });
  switch (p.action) {
    case "revoke_keys": {
      const { rows } = await tx.query<{ id: string; account_id: string }>(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = ANY($1) RETURNING id, account_id",
        [p.keyIds],
      );
      // In the proposal's order (RETURNING has none): the result and the audit rows read the same each time.
      const accountOf = new Map(rows.map((r) => [r.id, r.account_id]));
      const revoked = [...new Set(p.keyIds)].filter((id) => accountOf.has(id));
      const devices: { deviceId: string; gen: number }[] = [];
      for (const id of revoked) {
        const d = await revokeDevicesOfKey(tx, id);
        devices.push(...d);
        await audit("api_key.revoke", id, { accountId: accountOf.get(id), devices: d.length, bulk: true });
      }
      return {
        result: {
          revoked,
          unknown: p.keyIds.filter((id) => !accountOf.has(id)),
        },
        after: ({ redis }) => publishDeviceRevocations(redis, devices),
      };
    }
    case "change_scopes": {
      const { rows } = await tx.query<{ before: ApiKeyScope[] }>(
        `UPDATE api_keys k SET scopes = $2 FROM (SELECT scopes AS before FROM api_keys WHERE id = $1 FOR UPDATE) b
          WHERE k.id = $1 AND k.revoked_at IS NULL RETURNING b.before`,
        [p.keyId, [...new Set(p.scopes)]],
      );
      if (rows.length === 0)
        return { result: { changed: false, reason: "no live key with that id" }, after: async () => {} };
      await audit("api_key.scopes", p.keyId, { before: rows[0]!.before, after: p.scopes });
      return { result: { changed: true, before: rows[0]!.before, after: p.scopes }, after: async () => {} };
    }
    case "delete_modem_exits": {
      const deleted: string[] = [];
      for (const id of p.ids) if (await removeModemExit(tx, actor, id)) deleted.push(id);
      return {
        result: { deleted, unknown: p.ids.filter((id) => !deleted.includes(id)) },
        // Off sale after the commit; a repeat of the same request delists again (deleted rows too).
        after: async ({ redis, db }) => {
          for (const id of p.ids) {
            const exit = await findModemExit(db, id);
            if (exit?.deleted_at) await syncModemListing(redis, exit);
          }
        },
      };
    }
    case "set_setting": {
      const { rows } = await tx.query<{ before: unknown }>(
        "SELECT value AS before FROM settings WHERE key = $1",
        [p.key],
      );
      await tx.query(
        `INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
        [p.key, JSON.stringify(p.value)],
      );
      await audit("setting.set", p.key, { before: rows[0]?.before ?? null, after: p.value });
      return { result: { key: p.key, value: p.value }, after: async () => {} };
    }
    case "set_device_region": {
      // Relay configuration: relays redirect a device whose region override names another region.
      await audit("relay_config.device_region", p.deviceId, { region: p.region });
      return {
        result: { deviceId: p.deviceId, region: p.region },
        after: async ({ redis }) => {
          if (p.region === null)
            await redis.eval(
              "return redis.call('HDEL', KEYS[1], ARGV[1])",
              [keys.deviceRegionOverride()],
              [p.deviceId],
            );
          else await redis.hset(keys.deviceRegionOverride(), { [p.deviceId]: p.region });
        },
      };
    }
  }
}

/** Files an ops-agent's request as a pending proposal; returns the approval id. */
export async function fileProposal(tx: Queryable, p: ProposalAction, proposedBy: string): Promise<string> {
  const id = newId("apr", 12);
  await tx.query(
    "INSERT INTO approvals (id, kind, subject, summary, proposed_by) VALUES ($1, 'proposal', $2, $3, $4)",
    [id, newId("prp", 8), JSON.stringify(p), proposedBy],
  );
  await appendAudit(tx, { actor: proposedBy, action: "approval.propose", subject: id, detail: { ...p } });
  return id;
}
