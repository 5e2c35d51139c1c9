import { readFileSync } from "node:fs";
import { z } from "zod";
import { logSettings, parseConfig, refuseDevOnly } from "../shared/config.ts";
import { UPSTREAM_KEY_RE } from "../shared/upstream-auth.ts";

const ms = (dflt: number, min = 1) =>
  z.coerce
    .number()
    .int()
    .min(min)
    .max(24 * 3600_000)
    .default(dflt);
const count = (dflt: number, max: number) => z.coerce.number().int().min(1).max(max).default(dflt);

function isProxyUrl(raw: string): boolean {
  try {
    const u = new URL(raw);
    return (
      u.protocol === "http:" &&
      u.hostname !== "" &&
      u.username === "" &&
      u.password === "" &&
      u.pathname === "/" &&
      u.search === ""
    );
  } catch {
    return false;
  }
}

const schema = z
  .object({
    ...logSettings,
    REDIS_URL: z.string().regex(/^rediss?:\/\//, "REDIS_URL must be a redis:// or rediss:// URL"),
    RELAY_SHARED_SECRET: z.string().min(16, "RELAY_SHARED_SECRET must be at least 16 characters"),
    /** opens modems' sealed upstream credentials, as the gateway does (shared/upstream-auth.ts) */
    MODEM_UPSTREAM_KEY: z
      .string()
      .regex(UPSTREAM_KEY_RE, "must be 32 bytes of base64 (openssl rand -base64 32)")
      .optional(),
    /** Probe history; without it the prober keeps probing and logs that history is off. */
    DATABASE_URL: z.string().optional(),
    /** dev only: the WebSocket-to-TCP proxy in front of a local Postgres */
    NEON_WS_PROXY: z.string().optional(),
    /** A real HTTPS endpoint in production that serves PROBE_TARGET_PATH with a Content-Length. */
    PROBE_TARGET_HOST: z.string().min(1).optional(),
    PROBE_TARGET_PORT: z.coerce.number().int().min(1).max(65535).default(443),
    /** PEM text, or a path to a PEM file, of the CA to trust for the target; default: system CAs */
    PROBE_TARGET_CA: z.string().optional(),
    PROBE_TARGET_PATH: z
      .string()
      .regex(/^\/.*\{n\}/, "PROBE_TARGET_PATH must start with / and contain {n}")
      .default("/bytes/{n}"),
    /** dev only: "1" starts the built-in local target (prober/target.ts) and probes that instead */
    PROBE_LOCAL_TARGET: z.enum(["0", "1"]).default("0"),
    /** `/health` and `/metrics`; keep it on a private interface. Port 0 picks a free one. */
    PROBER_ADMIN_HOST: z.string().min(1).default("127.0.0.1"),
    PROBER_ADMIN_PORT: z.coerce.number().int().min(0).max(65535).default(7003),
    /** Serve only endpoint ids with this prefix (sharding; tests use it to stay in their tenant). */
    PROBE_ENDPOINT_PREFIX: z.string().default(""),

    /** cadence for verified endpoints; jittered by PROBE_JITTER_RATIO so probes spread out */
    PROBE_INTERVAL_MS: ms(60_000),
    /** an endpoint one pass into admission is probed again this soon, so new devices list fast */
    PROBE_ADMIT_INTERVAL_MS: ms(5_000),
    PROBE_RETRY_MS: ms(15_000),
    PROBE_JITTER_RATIO: z.coerce.number().min(0).max(0.9).default(0.2),
    /** a newly seen device is due within [0, this) so a burst of connects does not probe in lockstep */
    PROBE_NEW_SPREAD_MS: ms(1_000),
    PROBE_CONCURRENCY: count(8, 256),
    PROBE_BREAKER_CONCURRENCY: count(8, 256),
    /** runaway cap: probes (scheduled and breaker) per UTC hour; past it the prober records run_cap */
    PROBE_MAX_PER_HOUR: count(100_000, 10_000_000),
    /** runaway cap: scheduled watchdog runs per UTC hour */
    WATCHDOG_MAX_RUNS_PER_HOUR: count(120, 100_000),
    PROBE_TICK_MS: ms(500, 20),
    PROBE_DISCOVER_MS: ms(2_000, 20),
    /** after a breaker re-probe of an endpoint, further reports about it are ignored this long */
    PROBE_BREAKER_COOLDOWN_MS: ms(3_000, 0),

    PROBE_CONNECT_TIMEOUT_MS: ms(10_000),
    PROBE_TLS_TIMEOUT_MS: ms(8_000),
    PROBE_STALL_MS: ms(5_000),
    PROBE_OVERALL_TIMEOUT_MS: ms(30_000),
    PROBE_INITIAL_BYTES: count(64 * 1024, 1 << 30),
    PROBE_MAX_BYTES: count(16 * 1024 * 1024, 1 << 30),
    PROBE_TRANSFER_TARGET_MS: ms(1_000),
    PROBE_MIN_BYTES_FOR_SPEED: count(256 * 1024, 1 << 30),
    PROBE_FAST_KBPS: count(2048, 1 << 30),
    PROBE_MEDIUM_KBPS: count(512, 1 << 30),

    // Fleet watchdog (prober/watchdog.ts): on when the three below and DATABASE_URL are set.
    /** the gateway's customer HTTP port, e.g. http://127.0.0.1:7000 (no credentials in the URL) */
    WATCHDOG_PROXY_URL: z
      .string()
      .refine(isProxyUrl, "WATCHDOG_PROXY_URL must be http://host:port without credentials or a path")
      .optional(),
    /** the base username of a real pool key, psx_<account> (tier any, to reach both pools) */
    WATCHDOG_USERNAME: z
      .string()
      .toLowerCase()
      .regex(/^psx_[a-z0-9_]{1,64}$/, "WATCHDOG_USERNAME must be psx_<account>")
      .optional(),
    /** that key's pak_ secret; never logged */
    WATCHDOG_PASSWORD: z
      .string()
      .regex(/^pak_\S{1,196}$/, "WATCHDOG_PASSWORD must be a pak_ secret")
      .optional(),
    WATCHDOG_INTERVAL_MS: ms(60_000, 50),
    /** consecutive failed runs before a scope's alert opens; one clean run resolves it */
    WATCHDOG_FAILS_TO_ALERT: count(2, 100),
    /** one check (CONNECT, TLS, GET) must finish within this */
    WATCHDOG_TIMEOUT_MS: ms(15_000, 100),
    WATCHDOG_CONCURRENCY: count(4, 64),
    /** body size fetched per check ({n} in PROBE_TARGET_PATH) */
    WATCHDOG_BYTES: count(1024, 1 << 20),
    /** only these groups, e.g. "peer-us,mbl-de" (sharding, tests); default: every listed group */
    WATCHDOG_GROUPS: z
      .string()
      .toLowerCase()
      .regex(
        /^(mbl|peer)-[a-z]{2}(,(mbl|peer)-[a-z]{2})*$/,
        "WATCHDOG_GROUPS must be a comma list of <pool>-<country>, e.g. peer-us,mbl-de",
      )
      .optional(),
  })
  .superRefine((c, ctx) => {
    if (!c.PROBE_TARGET_HOST && c.PROBE_LOCAL_TARGET !== "1")
      ctx.addIssue({
        code: "custom",
        path: ["PROBE_TARGET_HOST"],
        message: "PROBE_TARGET_HOST is required (or PROBE_LOCAL_TARGET=1 in dev)",
      });
    if (c.PROBE_MEDIUM_KBPS > c.PROBE_FAST_KBPS)
      ctx.addIssue({
        code: "custom",
        path: ["PROBE_MEDIUM_KBPS"],
        message: "PROBE_MEDIUM_KBPS must not exceed PROBE_FAST_KBPS",
      });
    const watchdog = ["WATCHDOG_PROXY_URL", "WATCHDOG_USERNAME", "WATCHDOG_PASSWORD"] as const;
    if (watchdog.some((k) => c[k] !== undefined))
      for (const k of watchdog)
        if (c[k] === undefined)
          ctx.addIssue({
            code: "custom",
            path: [k],
            message: `${k} is required when any of ${watchdog.join(", ")} is set`,
          });
    if (c.PROBE_INITIAL_BYTES > c.PROBE_MAX_BYTES)
      ctx.addIssue({
        code: "custom",
        path: ["PROBE_INITIAL_BYTES"],
        message: "PROBE_INITIAL_BYTES must not exceed PROBE_MAX_BYTES",
      });
  })
  .transform((c, ctx) => {
    let caPem = c.PROBE_TARGET_CA;
    if (caPem && !caPem.includes("-----BEGIN")) {
      try {
        caPem = readFileSync(caPem, "utf8");
      } catch {
        ctx.addIssue({
          code: "custom",
          path: ["PROBE_TARGET_CA"],
          message: "PROBE_TARGET_CA is neither PEM text nor a readable file",
        });
        return z.NEVER;
      }
    }
    return {
      ...c,
      PROBE_TARGET_CA: caPem,
      WATCHDOG_GROUPS: c.WATCHDOG_GROUPS ? [...new Set(c.WATCHDOG_GROUPS.split(","))] : undefined,
    };
  });

/** Refused when ENVIRONMENT=production (the default of `node prober/main.ts`). */
export const PROBER_DEV_ONLY = ["NEON_WS_PROXY", "PROBE_LOCAL_TARGET"] as const;

export type ProberConfig = z.output<typeof schema>;

/** Parses the prober's environment once; throws ConfigError naming each bad variable. */
export function loadProberConfig(env: Record<string, string | undefined>): ProberConfig {
  refuseDevOnly(env, PROBER_DEV_ONLY);
  return parseConfig(schema, env);
}
