// `npm run migrate`: applies pending migrations to DATABASE_URL (NEON_WS_PROXY for a plain local Postgres).
import { migrate } from "./migrate.ts";
import { createPool } from "./pool.ts";

const url = process.env.DATABASE_URL;
if (!url) {
  console.error("DATABASE_URL is required (postgres://user:pass@host/db)");
  process.exit(2);
}
const pool = createPool(url, process.env.NEON_WS_PROXY || undefined);
try {
  const applied = await migrate(pool);
  console.log(applied.length ? `applied: ${applied.join(", ")}` : "up to date");
} finally {
  await pool.end();
}
