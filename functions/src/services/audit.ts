import type { Queryable } from "../../../shared/db/pool.ts";

export interface AuditEntry {
  /** account id, `cron:<job>`, `gateway`, ... */
  actor: string;
  /** `<resource>.<verb>`, e.g. `credential.topup` */
  action: string;
  subject: string | null;
  /** never a secret: ids, amounts and settings only */
  detail: Record<string, unknown>;
}

/** Appends one audit row; pass the transaction that makes the change so both commit together. */
export async function appendAudit(db: Queryable, entry: AuditEntry): Promise<void> {
  await db.query("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4)", [
    entry.actor,
    entry.action,
    entry.subject,
    JSON.stringify(entry.detail),
  ]);
}
