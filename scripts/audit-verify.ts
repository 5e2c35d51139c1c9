// `npm run audit:verify`: checks the hash chain of the audit log (docs/adr/0016) in DATABASE_URL
// (with NEON_WS_PROXY for a plain Postgres), or of the running local network (.local/stack.json)
// when DATABASE_URL is unset. Prints the rows verified and the chain's head (record it outside the
// database); `-- --expect-head <chain_seq>:<hash>` also checks that a head recorded earlier is still
// there (a rewrite that rehashed everything after it is caught). Exits 1 naming the first broken row.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type ChainHead, verifyAuditChain } from "../functions/src/services/audit-chain.ts";
import { createPool } from "../shared/db/pool.ts";

const root = join(import.meta.dirname, "..");

function target(): { url: string; wsProxy?: string } {
  if (process.env.DATABASE_URL)
    return { url: process.env.DATABASE_URL, wsProxy: process.env.NEON_WS_PROXY || undefined };
  const localDir = process.env.STACK_DIR ?? join(root, ".local");
  const stackFile = join(localDir, "stack.json");
  if (!existsSync(stackFile)) {
    console.error(
      `audit:verify: set DATABASE_URL, or start the local network (npm start) so ${stackFile} exists`,
    );
    process.exit(2);
  }
  const stack = JSON.parse(readFileSync(stackFile, "utf8")) as {
    postgres?: { url?: string; wsProxy?: string };
  };
  let url = stack.postgres?.url ?? "";
  // stack.json masks the password; the launcher writes the full URL beside it (mode 0600).
  const urlFile = join(localDir, "database-url");
  if (url.includes(":***@") && existsSync(urlFile)) url = readFileSync(urlFile, "utf8").trim();
  if (!url || url.includes(":***@")) {
    console.error("audit:verify: .local/stack.json has no usable database URL; set DATABASE_URL");
    process.exit(2);
  }
  return { url, wsProxy: stack.postgres?.wsProxy };
}

function expectedHead(): ChainHead | undefined {
  const i = process.argv.indexOf("--expect-head");
  if (i < 0) return undefined;
  const m = /^(\d+):([0-9a-fA-F]{64})$/.exec(process.argv[i + 1] ?? "");
  if (!m) {
    console.error(
      "audit:verify: --expect-head takes <chain_seq>:<64 hex hash>, as a previous run printed it",
    );
    process.exit(2);
  }
  return { chainSeq: m[1]!, hash: m[2]!.toLowerCase() };
}

const expectHead = expectedHead();
const { url, wsProxy } = target();
const pool = createPool(url, wsProxy);
try {
  const check = await verifyAuditChain(pool, expectHead ? { expectHead } : {});
  if (check.ok) {
    console.log(
      `audit chain ok: ${check.verified} rows verified${expectHead ? `; recorded head ${expectHead.chainSeq} still in place` : ""}`,
    );
    if (check.head)
      console.log(
        `head ${check.head.chainSeq}:${check.head.hash} (record it elsewhere; check later with --expect-head ${check.head.chainSeq}:${check.head.hash})`,
      );
  } else {
    const b = check.broken;
    console.error(
      `audit chain BROKEN at audit_log id ${b.id} (chain_seq ${b.chainSeq}): ${b.reason}; ${check.verified} rows before it verified`,
    );
    process.exitCode = 1;
  }
} finally {
  await pool.end();
}
