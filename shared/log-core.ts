// What every log line of ours shares, free of Node-only imports so the Worker can use it too: the
// secret scrubber, and rate-limited connection-error logging (shared/db/pool.ts, redis.node.ts).

export const LOG_FORMATS = ["json", "text"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/**
 * Values shaped like our secrets, caught in the serialised line whatever field (or message) carries
 * them: pool keys (pak_), API keys and pool usernames (psx_), refresh tokens (prt_), web session
 * tokens (wss_), JWTs, and Bearer / Basic credentials. A list of field names alone would miss a
 * secret pasted into a message.
 */
export const SECRET_VALUE =
  /\b(?:pak|psx|prt|wss)_[A-Za-z0-9_.-]+|\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+|\b(Bearer|Basic)\s+[A-Za-z0-9+/=._~-]+/g;

/** Replaces every secret-shaped value in a line; the guard every log line passes through. */
export function scrubSecrets(line: string): string {
  return line.replace(SECRET_VALUE, (m, scheme?: string) => {
    if (scheme) return `${scheme} [redacted]`;
    return m.startsWith("eyJ") ? "[redacted:jwt]" : `[redacted:${m.slice(0, 3)}]`;
  });
}

/** Where connection errors go: a pino logger, or anything with these two methods. */
export interface ConnectionLog {
  warn(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
}

const line = (level: string, fields: Record<string, unknown>, msg: string) =>
  scrubSecrets(JSON.stringify({ level, time: new Date().toISOString(), ...fields, msg }));

/** One JSON line on stderr, for clients made without a logger (the Worker, scripts, tests). */
export const stderrLog: ConnectionLog = {
  warn: (fields, msg) => console.error(line("warn", fields, msg)),
  info: (fields, msg) => console.error(line("info", fields, msg)),
};

/**
 * At most one line per key per window; the next line says how many were held back. A reconnect
 * loop fails on every retry, and an outage must not flood the log.
 */
export function errorLimiter(windowMs: number, now: () => number = Date.now) {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (key: string): { suppressed: number } | null => {
    const t = now();
    const seen = last.get(key);
    if (seen && t - seen.at < windowMs) {
      seen.suppressed++;
      return null;
    }
    last.set(key, { at: t, suppressed: 0 });
    return { suppressed: seen?.suppressed ?? 0 };
  };
}

/** One line per cause per 30 s. */
export const ERROR_LOG_WINDOW_MS = 30_000;
