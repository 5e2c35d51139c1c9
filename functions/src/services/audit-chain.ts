/**
 * Verifies the hash-chained audit log (migration 0015, docs/adr/0016): every row's hash must be
 * sha256(prev_hash || canonical row), its prev_hash the hash of the row before it, and chain_seq
 * must have no gaps. Recomputed here, outside the database, so a rewritten row or a deleted one
 * shows up even if its stored hash was left alone.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { sha256Hex } from "../../../shared/ids.ts";

export const GENESIS_HASH = "0".repeat(64);

/** The chain's last row: an operator records it elsewhere, and a later check with it catches a
 *  rewrite that recomputed every hash after the row it changed (docs/adr/0016). */
export interface ChainHead {
  chainSeq: string;
  hash: string;
}

export type ChainCheck =
  | { ok: true; verified: number; head: ChainHead | null }
  | { ok: false; verified: number; broken: { id: string; chainSeq: string; reason: string } };

const hexBytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (b) => Number.parseInt(b, 16));

/**
 * Walks the chain in chain_seq order, `batch` rows at a time; stops at the first broken row. With
 * `expectHead` (a head recorded earlier), the row at that chain_seq must still carry that hash.
 */
export async function verifyAuditChain(
  db: Queryable,
  opts: { batch?: number; expectHead?: ChainHead } = {},
): Promise<ChainCheck> {
  const batch = opts.batch ?? 5000;
  let anchored = !opts.expectHead;
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
      if (opts.expectHead && r.chain_seq === opts.expectHead.chainSeq) {
        if (r.hash !== opts.expectHead.hash.toLowerCase())
          return fail(
            `hash differs from the recorded head ${opts.expectHead.hash}: the chain up to here was rewritten and rehashed`,
          );
        anchored = true;
      }
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
  if (!anchored)
    return {
      ok: false,
      verified,
      broken: {
        id: "none",
        chainSeq: opts.expectHead!.chainSeq,
        reason: `the recorded head (chain_seq ${opts.expectHead!.chainSeq}) is past the end of the chain: rows were removed`,
      },
    };
  return { ok: true, verified, head: verified ? { chainSeq: String(prevSeq), hash: prevHash } : null };
}
