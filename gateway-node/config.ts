import { z } from "zod";
import { parseConfig } from "../shared/config.ts";

const port = z.coerce.number().int().min(0).max(65_535);
const flag = z
  .enum(["0", "1", "true", "false"])
  .default("0")
  .transform((v) => v === "1" || v === "true");

const schema = z.object({
  GATEWAY_HOST: z.string().min(1).default("127.0.0.1"),
  GATEWAY_HTTP_PORT: port.default(7000),
  GATEWAY_SOCKS_PORT: port.default(7001),
  /** /metrics and /health; keep it off the customer-facing interface */
  GATEWAY_ADMIN_PORT: port.default(7002),
  GATEWAY_ID: z.string().min(1).default("gw-local"),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
  RELAY_SHARED_SECRET: z.string().min(16, "must be at least 16 characters"),
  /** a tunnel's hold on an endpoint lives this long unless renewed (renewed every third of it) */
  GATEWAY_HOLD_LEASE_MS: z.coerce.number().int().min(500).max(300_000).default(30_000),
  /** bytes leased to a tunnel per grant; bounds the overshoot past a credential's cap */
  GATEWAY_BYTE_LEASE: z.coerce.number().int().min(4096).max(1_048_576).default(262_144),
  /** usage flush interval; the contract is at most 5 s */
  GATEWAY_FLUSH_MS: z.coerce.number().int().min(100).max(5000).default(1000),
  GATEWAY_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(15_000),
  /** customer bytes unanswered by the exit this long: reported to the prober's circuit breaker */
  GATEWAY_STALL_REPORT_MS: z.coerce.number().int().min(500).max(120_000).default(8_000),
  GATEWAY_IDLE_TIMEOUT_MS: z.coerce.number().int().min(1000).default(300_000),
  /** failed logins per client IP per minute before E_RATE_LIMITED */
  GATEWAY_AUTH_FAIL_LIMIT: z.coerce.number().int().min(1).default(30),
  GATEWAY_DRAIN_MS: z.coerce.number().int().min(0).max(600_000).default(20_000),
  /** development only: lets customers reach loopback/private targets (the local stack's test servers) */
  GATEWAY_ALLOW_PRIVATE_TARGETS: flag,
  /**
   * Optional comma-separated host list: when set, customers may reach only these hosts (exactly as
   * written in CONNECT/SOCKS/absolute URIs). For private deployments and test harnesses whose
   * clients (browsers) also try to reach the internet on their own.
   */
  GATEWAY_TARGET_HOSTS: z
    .string()
    .optional()
    .transform((v) =>
      v === undefined
        ? null
        : new Set(
            v
              .split(",")
              .map((h) =>
                h
                  .trim()
                  .toLowerCase()
                  .replace(/^\[|\]$/g, ""),
              )
              .filter(Boolean),
          ),
    ),
});

export type GatewayConfig = z.output<typeof schema>;

/** Parses the gateway's environment once; throws ConfigError naming each bad variable. */
export function loadGatewayConfig(env: Record<string, string | undefined>): GatewayConfig {
  return parseConfig(schema, env);
}
