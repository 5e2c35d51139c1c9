/**
 * Verifies the hash-chained audit log (migration 0015, docs/adr/0016): every row's hash must be
 * sha256(prev_hash || canonical row), its prev_hash the hash of the row before it, and chain_seq
 * must have no gaps. Recomputed here, outside the database, so a rewritten row or a deleted one
 * shows up even if its stored hash was left alone.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { sha256Hex } from "../../../shared/ids.ts";

export const GENESIS_HASH = "0".repeat(64);

export type ChainCheck =
  | { ok: true; verified: number }
  | { ok: false; verified: number; broken: { id: string; chainSeq: string; reason: string } };

const hexBytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (b) => Number.parseInt(b, 16));

/** Walks the chain in chain_seq order, `batch` rows at a time; stops at the first broken row. */
export async function verifyAuditChain(db: Queryable, opts: { batch?: number } = {}): Promise<ChainCheck> {
  const batch = opts.batch ?? 5000;
  let prevHash = GENESIS_HASH;
  let prevSeq = 0n;
  let verified = 0;
  for (;;) {
    // ORDER BY names the table's column: the text alias below would sort "10" before "2".
    const { rows } = await db.query<{
      id: string;
      chain_seq: string;
      prev_hash: string;
      hash: string;
      canonical: string;
    }>(
      `SELECT id::text, chain_seq::text, prev_hash, hash,
              audit_canonical(chain_seq, id, at, actor, action, subject, detail) AS canonical
         FROM audit_log WHERE chain_seq > $1 ORDER BY audit_log.chain_seq LIMIT $2`,
      [String(prevSeq), batch],
    );
    for (const r of rows) {
      const fail = (reason: string): ChainCheck => ({
        ok: false,
        verified,
        broken: { id: r.id, chainSeq: r.chain_seq, reason },
      });
      const seq = BigInt(r.chain_seq);
      if (seq !== prevSeq + 1n) return fail(`chain_seq jumps from ${prevSeq} to ${seq}: rows were removed`);
      if (r.prev_hash !== prevHash) return fail("prev_hash is not the hash of the row before it");
      const canonical = new TextEncoder().encode(r.canonical);
      const prev = hexBytes(r.prev_hash);
      const bytes = new Uint8Array(prev.length + canonical.length);
      bytes.set(prev);
      bytes.set(canonical, prev.length);
      if ((await sha256Hex(bytes)) !== r.hash) return fail("hash does not match the row's contents");
      prevHash = r.hash;
      prevSeq = seq;
      verified++;
    }
    if (rows.length < batch) break;
  }
  // Every committed row is chained at its commit; one without a place in the chain was slipped in
  // with the chaining trigger disabled.
  const { rows: unchained } = await db.query<{ id: string }>(
    "SELECT id::text FROM audit_log WHERE chain_seq IS NULL OR hash IS NULL ORDER BY id LIMIT 1",
  );
  if (unchained[0])
    return {
      ok: false,
      verified,
      broken: { id: unchained[0].id, chainSeq: "none", reason: "the row is not in the chain" },
    };
  return { ok: true, verified };
}
