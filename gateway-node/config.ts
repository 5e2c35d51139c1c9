import { z } from "zod";
import { logSettings, parseConfig, refuseDevOnly } from "../shared/config.ts";
import { UPSTREAM_KEY_RE } from "../shared/upstream-auth.ts";
import { allowListEntry } from "./targets.ts";

const port = z.coerce.number().int().min(0).max(65_535);
const flag = z
  .enum(["0", "1", "true", "false"])
  .default("0")
  .transform((v) => v === "1" || v === "true");

const schema = z.object({
  ...logSettings,
  GATEWAY_HOST: z.string().min(1).default("127.0.0.1"),
  GATEWAY_HTTP_PORT: port.default(7000),
  GATEWAY_SOCKS_PORT: port.default(7001),
  /** /metrics and /health; keep it off the customer-facing interface */
  GATEWAY_ADMIN_PORT: port.default(7002),
  /** the admin port's own interface: loopback unless set, whatever GATEWAY_HOST says */
  GATEWAY_ADMIN_HOST: z.string().min(1).default("127.0.0.1"),
  GATEWAY_ID: z.string().min(1).default("gw-local"),
  /** opens modems' sealed upstream credentials (the API seals them with the same key) */
  MODEM_UPSTREAM_KEY: z
    .string()
    .regex(UPSTREAM_KEY_RE, "must be 32 bytes of base64 (openssl rand -base64 32)")
    .optional(),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
  RELAY_SHARED_SECRET: z.string().min(16, "must be at least 16 characters"),
  /** a tunnel's hold on an endpoint lives this long unless renewed (renewed every third of it) */
  GATEWAY_HOLD_LEASE_MS: z.coerce.number().int().min(500).max(300_000).default(30_000),
  /** bytes leased to a tunnel per grant; bounds the overshoot past a credential's cap */
  GATEWAY_BYTE_LEASE: z.coerce.number().int().min(4096).max(1_048_576).default(262_144),
  /** the most a fast tunnel's lease grows to (metering.ts); GATEWAY_BYTE_LEASE or less: no growth */
  GATEWAY_BYTE_LEASE_MAX: z.coerce.number().int().min(4096).max(67_108_864).default(8_388_608),
  /** usage flush interval; the contract is at most 5 s */
  GATEWAY_FLUSH_MS: z.coerce.number().int().min(100).max(5000).default(1000),
  GATEWAY_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(15_000),
  /** customer bytes unanswered by the exit this long: reported to the prober's circuit breaker */
  GATEWAY_STALL_REPORT_MS: z.coerce.number().int().min(500).max(120_000).default(8_000),
  /** a tunnel with no bytes either way this long is closed and its hold released */
  GATEWAY_IDLE_TIMEOUT_MS: z.coerce.number().int().min(1000).default(120_000),
  /**
   * Absolute deadline for an unauthenticated connection to finish its handshake (HTTP request
   * head, SOCKS5 greeting + login + request), on both customer ports; bytes do not extend it.
   */
  GATEWAY_HANDSHAKE_TIMEOUT_MS: z.coerce.number().int().min(100).max(15_000).default(10_000),
  /** unauthenticated connections open at once, per source address and in total */
  GATEWAY_UNAUTH_PER_IP: z.coerce.number().int().min(1).default(64),
  GATEWAY_UNAUTH_TOTAL: z.coerce.number().int().min(1).default(4096),
  /**
   * A credential holds at most ceil(bytes left / this) endpoints at once (and never more than its
   * maxConnections): a cheap key cannot hold most of the pool.
   */
  GATEWAY_HOLD_BYTES: z.coerce
    .number()
    .int()
    .min(4096)
    .default(4 * 1_048_576),
  /** Retry-After (seconds) on 503 E_NO_CAPACITY */
  GATEWAY_RETRY_AFTER_S: z.coerce.number().int().min(1).max(3600).default(5),
  /** failed logins per client IP per minute before E_RATE_LIMITED */
  GATEWAY_AUTH_FAIL_LIMIT: z.coerce.number().int().min(1).default(30),
  GATEWAY_DRAIN_MS: z.coerce.number().int().min(0).max(600_000).default(20_000),
  /**
   * Development only: lets customers reach loopback targets (127.0.0.0/8, ::1, localhost), never
   * other private ranges. Prefer GATEWAY_TARGET_HOSTS with exact host:port entries.
   */
  GATEWAY_ALLOW_PRIVATE_TARGETS: flag,
  /**
   * Optional comma-separated `host`, `host:port` or `[v6]:port` list: when set, customers may reach
   * only these (normalized as targets are; a bare host means any port), and these are trusted as
   * written (may be loopback). For private deployments, the local stack and test harnesses whose
   * clients (browsers) also try to reach the internet on their own.
   */
  GATEWAY_TARGET_HOSTS: z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return null;
      const out = new Set<string>();
      for (const raw of v.split(",").filter((e) => e.trim())) {
        const entry = allowListEntry(raw);
        if (entry) out.add(entry);
        else
          ctx.issues.push({
            code: "custom",
            input: v,
            message: `"${raw.trim()}" is not a host or host:port`,
          });
      }
      return out as ReadonlySet<string>;
    }),
});

/** Refused when ENVIRONMENT=production (the default of `node gateway-node/main.ts`). */
export const GATEWAY_DEV_ONLY = ["GATEWAY_ALLOW_PRIVATE_TARGETS"] as const;

export type GatewayConfig = z.output<typeof schema>;

/** Parses the gateway's environment once; throws ConfigError naming each bad variable. */
export function loadGatewayConfig(env: Record<string, string | undefined>): GatewayConfig {
  refuseDevOnly(env, GATEWAY_DEV_ONLY);
  return parseConfig(schema, env);
}
