/**
 * Rotation of a dedicated modem: the renter asks for a new IP, we POST the operator's rotation
 * webhook for that modem (it makes the modem re-dial) and record what it answered. Modems without a
 * webhook cannot rotate on demand; their IP changes when the carrier re-issues it.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";
import { appendAudit } from "./audit.ts";
import { reservationOfCredential } from "./modem-reservations.ts";

// A webhook that has not answered by then is treated as failed; the renter may try again later.
const WEBHOOK_TIMEOUT_MS = 5_000;

export type RotationResult =
  | { kind: "accepted"; rotationId: string; requestedAt: Date; httpStatus: number }
  | { kind: "failed"; rotationId: string; requestedAt: Date; httpStatus: number | null; reason: string }
  | { kind: "no_webhook" }
  | { kind: "not_reserved"; endedAt: Date | null };

/** Asks the modem reserved for `credentialId` to re-dial, once; the caller rate-limits. */
export async function requestRotation(
  deps: { db: Queryable; now(): Date; fetch: typeof fetch },
  input: { credentialId: string; actor: string },
): Promise<RotationResult> {
  const reservation = await reservationOfCredential(deps.db, input.credentialId);
  const now = deps.now();
  if (!reservation || reservation.released_at || new Date(reservation.ends_at) <= now)
    return { kind: "not_reserved", endedAt: reservation ? new Date(reservation.ends_at) : null };
  if (!reservation.rotation_url) return { kind: "no_webhook" };

  const rotationId = newId("mrot");
  let httpStatus: number | null = null;
  let reason = "";
  try {
    const res = await deps.fetch(reservation.rotation_url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Rotation-Id": rotationId },
      body: JSON.stringify({
        rotationId,
        modemId: reservation.modem_exit_id,
        reservationId: reservation.id,
        requestedAt: now.toISOString(),
      }),
      signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
      redirect: "manual",
    });
    httpStatus = res.status;
    await res.body?.cancel().catch(() => {});
    if (res.status < 200 || res.status > 299) reason = `the rotation webhook answered HTTP ${res.status}`;
  } catch (err) {
    reason =
      (err as Error)?.name === "TimeoutError"
        ? `the rotation webhook did not answer within ${WEBHOOK_TIMEOUT_MS / 1000} s`
        : "the rotation webhook could not be reached";
  }
  const status = reason ? "failed" : "accepted";
  await deps.db.query(
    `INSERT INTO modem_rotations (id, reservation_id, modem_exit_id, status, http_status, requested_at)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [rotationId, reservation.id, reservation.modem_exit_id, status, httpStatus, now.toISOString()],
  );
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "modem.rotate",
    subject: reservation.modem_exit_id,
    detail: { rotationId, status, httpStatus },
  });
  if (reason) return { kind: "failed", rotationId, requestedAt: now, httpStatus, reason };
  return { kind: "accepted", rotationId, requestedAt: now, httpStatus: httpStatus ?? 0 };
}

/** The renter's last rotation (for the status route), or null. */
export async function lastRotation(
  db: Queryable,
  reservationId: string,
): Promise<{ id: string; status: string; requestedAt: string } | null> {
  const { rows } = await db.query<{ id: string; status: string; requested_at: Date }>(
    "SELECT id, status, requested_at FROM modem_rotations WHERE reservation_id = $1 ORDER BY requested_at DESC LIMIT 1",
    [reservationId],
  );
  const r = rows[0];
  return r ? { id: r.id, status: r.status, requestedAt: new Date(r.requested_at).toISOString() } : null;
}
