import { createServer } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { createPool } from "./db/pool.ts";
import { logMessages, memoryLogger } from "./log.ts";
import { tcpRedis } from "./redis.node.ts";

// Connection errors of the long-lived processes' Redis and Postgres clients reach the log (rate
// limited), where they used to be swallowed by empty listeners.
const e = stateEnv();
const admin = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
afterAll(() => admin.end());

/** A port that accepts and drops every connection: Redis reconnects against it at once, forever. */
async function droppingPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return { port, close: () => new Promise((r) => server.close(() => r())) };
}

describe("connection errors are logged, rate limited, without credentials", () => {
  it("a Redis that drops every connection: one line per cause however many retries, never the password", async () => {
    const dropping = await droppingPort();
    const lines: string[] = [];
    const redis = tcpRedis(`redis://default:hunter2secret@127.0.0.1:${dropping.port}`, {
      log: memoryLogger(lines, "test"),
    });
    try {
      await waitUntil(async () => lines.length > 0, 5_000, "a redis error line");
      await new Promise((r) => setTimeout(r, 1_000)); // ioredis retries many times meanwhile
      // ioredis retried many times; each cause (ECONNRESET, a closed connection...) said once.
      expect(new Set(logMessages(lines))).toEqual(new Set(["redis connection error"]));
      const codes = lines.map((l) => (JSON.parse(l) as { code: string }).code);
      expect(codes).toEqual([...new Set(codes)]);
      const line = JSON.parse(lines[0]!) as Record<string, unknown>;
      expect(line).toMatchObject({ level: "warn", redis: `redis://127.0.0.1:${dropping.port}` });
      expect(lines.join("\n")).not.toContain("hunter2secret");
    } finally {
      await redis.close();
      await dropping.close();
    }
  });

  it("a Postgres backend killed under an idle pooled client is logged, not swallowed", async () => {
    const lines: string[] = [];
    const pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY, { log: memoryLogger(lines, "test") });
    try {
      const { rows } = await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      await admin.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      await waitUntil(async () => lines.length > 0, 5_000, "a postgres error line");
      expect(logMessages(lines)).toEqual(["postgres connection error"]);
      expect(lines[0]).not.toContain(new URL(e.DATABASE_URL).password || "\u0000");
    } finally {
      await pool.end();
    }
  });
});
