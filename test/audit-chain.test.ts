// The hash-chained audit log (migration 0015) and `npm run audit:verify`, on a database of this
// file's own: tampering with the shared test database would break other files' checks.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAudit } from "../functions/src/services/audit.ts";
import { migrate } from "../shared/db/migrate.ts";
import { createPool, type Pool } from "../shared/db/pool.ts";
import { stateEnv } from "./helpers/env.ts";

const e = stateEnv();
const root = join(import.meta.dirname, "..");
const dbName = `audit_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
const dbUrl = e.DATABASE_URL.replace(/\/[^/?]+(\?|$)/, `/${dbName}$1`);
const admin = createPool(e.DATABASE_URL.replace(/\/[^/?]+(\?|$)/, "/postgres$1"), e.NEON_WS_PROXY);
let pool: Pool;

beforeAll(async () => {
  await admin.query(`CREATE DATABASE ${dbName}`);
  pool = createPool(dbUrl, e.NEON_WS_PROXY);
  await migrate(pool);
});

afterAll(async () => {
  await pool?.end();
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
});

/** `npm run audit:verify` against this file's database. */
function verify(args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(root, "scripts", "audit-verify.ts"), ...args],
      { cwd: root, env: { ...process.env, DATABASE_URL: dbUrl, NEON_WS_PROXY: e.NEON_WS_PROXY } },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("audit:verify", () => {
  it("verifies a chain written concurrently, then names the first row someone rewrote", async () => {
    // Concurrent writers: chain order is decided under the lock, not by id order.
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        appendAudit(pool, {
          actor: `test:${i}`,
          action: "payout.confirm",
          subject: `wd_${i}`,
          detail: { amountMicro: String(1_000_000 * (i + 1)), note: "ünïcode ✓" },
        }),
      ),
    );
    const ok = await verify();
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("12 rows verified");

    // The append-only trigger stops an UPDATE; a superuser lifts it, as an attacker with the keys would.
    await expect(pool.query("UPDATE audit_log SET detail = '{}' WHERE chain_seq = 5")).rejects.toThrow(
      /append-only/,
    );
    const { rows } = await pool.query<{ id: string; actor: string }>(
      "SELECT id::text, actor FROM audit_log WHERE chain_seq = 5",
    );
    const victim = rows[0]!.id;
    const original = rows[0]!;
    await pool.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update");
    await pool.query(`UPDATE audit_log SET detail = '{"amountMicro": "999000000"}' WHERE id = ${victim}`);
    await pool.query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update");

    const broken = await verify();
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain(`audit_log id ${victim} (chain_seq 5)`);
    expect(broken.stderr).toContain("4 rows before it verified");

    // Put the original back: the chain verifies again (it checks contents, not a flag).
    await pool.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update");
    await pool.query(`UPDATE audit_log SET detail = $1 WHERE id = ${victim}`, [
      JSON.stringify({
        amountMicro: String(1_000_000 * (Number(original.actor.slice(5)) + 1)),
        note: "ünïcode ✓",
      }),
    ]);
    await pool.query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update");
    expect((await verify()).code).toBe(0);
  });

  it("the chaining exception cannot rewrite a chained row, and a row slipped in unchained is caught", async () => {
    const client = await pool.connect();
    try {
      await client.query("SELECT set_config('peerproxy.audit_chaining', 'on', false)");
      await expect(client.query("UPDATE audit_log SET detail = '{}' WHERE chain_seq = 1")).rejects.toThrow(
        /append-only/,
      );
    } finally {
      client.release();
    }
    await pool.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain");
    const { rows } = await pool.query<{ id: string }>(
      "INSERT INTO audit_log (actor, action, subject) VALUES ('intruder', 'payout.confirm', 'wd_x') RETURNING id::text",
    );
    await pool.query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_chain");
    const out = await verify();
    expect(out.code).toBe(1);
    expect(out.stderr).toContain(`audit_log id ${rows[0]!.id} (chain_seq none): the row is not in the chain`);
  });

  it("a rewrite that rehashes every later row passes a plain check but not one against a recorded head", async () => {
    // The previous test left an unchained row behind: take it out so this chain starts sound.
    await pool.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update");
    await pool.query("DELETE FROM audit_log WHERE chain_seq IS NULL");
    await pool.query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update");
    for (let i = 0; i < 4; i++)
      await appendAudit(pool, {
        actor: `head:${i}`,
        action: "payout.confirm",
        subject: `wd_h${i}`,
        detail: {},
      });
    const first = await verify();
    expect(first.code).toBe(0);
    const head = /head (\d+:[0-9a-f]{64})/.exec(first.stdout)?.[1];
    expect(head).toBeDefined();
    expect((await verify(["--expect-head", head!])).stdout).toContain("still in place");

    // An attacker with the owner's keys rewrites a row and recomputes every hash from it on.
    const { rows } = await pool.query<{ seq: string }>("SELECT max(chain_seq)::text AS seq FROM audit_log");
    const last = Number(rows[0]!.seq);
    await pool.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update");
    await pool.query(`UPDATE audit_log SET actor = 'rewritten' WHERE chain_seq = ${last - 2}`);
    for (let seq = last - 2; seq <= last; seq++)
      await pool.query(
        `UPDATE audit_log a SET prev_hash = p.hash,
                hash = encode(sha256(decode(p.hash, 'hex') ||
                  convert_to(audit_canonical(a.chain_seq, a.id, a.at, a.actor, a.action, a.subject, a.detail), 'UTF8')), 'hex')
           FROM audit_log p WHERE p.chain_seq = a.chain_seq - 1 AND a.chain_seq = $1`,
        [seq],
      );
    await pool.query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update");
    expect((await verify()).code).toBe(0);
    const caught = await verify(["--expect-head", head!]);
    expect(caught.code).toBe(1);
    expect(caught.stderr).toContain(`(chain_seq ${last}): hash differs from the recorded head`);
    expect((await verify(["--expect-head", "12"])).code).toBe(2);
  });
});
