import { z } from "zod";
import { parseConfig } from "../../shared/config.ts";
import { UPSTREAM_KEY_RE } from "../../shared/upstream-auth.ts";

/** Every variable the API reads. Parsed once per isolate; a bad value fails closed naming it. */
export const configSchema = z
  .object({
    ENVIRONMENT: z.enum(["development", "test", "production"]).default("production"),
    DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\/.+/, "must be a postgres:// connection string"),
    /** Dev only: route the Neon driver through dev/neon-wsproxy.ts, e.g. "127.0.0.1:5433/v1". */
    NEON_WS_PROXY: z.string().optional(),
    UPSTASH_REDIS_REST_URL: z.url("must be the Upstash REST URL (https://...)"),
    UPSTASH_REDIS_REST_TOKEN: z.string().min(1, "is required"),
    /** HS256 key for peer JWTs; every relay has the same value. */
    JWT_SECRET: z.string().min(32, "must be at least 32 characters"),
    /**
     * Seals modems' upstream proxy credentials (shared/upstream-auth.ts); gateways and the prober
     * hold the same value to open them. Unset: registering credentials answers 503 E_CONFIG.
     */
    MODEM_UPSTREAM_KEY: z
      .string()
      .regex(UPSTREAM_KEY_RE, "must be 32 bytes of base64 (openssl rand -base64 32)")
      .optional(),
    /** Per client IP, per minute. */
    RATE_LIMIT_REGISTER_PER_MINUTE: z.coerce.number().int().positive().default(30),
    RATE_LIMIT_REFRESH_PER_MINUTE: z.coerce.number().int().positive().default(60),
    /** Sign-in attempts of the HTML pages, per client IP per minute (docs/adr/0020). */
    RATE_LIMIT_SIGN_IN_PER_MINUTE: z.coerce.number().int().positive().default(10),
    /** Dev only: what the ASN lookup would say for every client (no request.cf locally). */
    DEV_CLIENT_IP_CLASS: z.enum(["mobile", "residential", "datacenter"]).optional(),
    /** Dev only: the client's country for relay assignment (ISO-2). */
    DEV_CLIENT_COUNTRY: z
      .string()
      .regex(/^[A-Z]{2}$/, "must be an ISO-2 country code in capitals")
      .optional(),
    // x402 purchase. All optional: without them the purchase routes answer 503 (fail closed) and the
    // rest of the API is unaffected. Values are checked by the x402 readiness check, not here, so a
    // typo in a payment variable cannot take down unrelated routes.
    X402_BASE_RPC_URL: z.string().optional(),
    X402_BASE_PAY_TO: z.string().optional(),
    X402_BASE_USDC: z.string().default("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
    X402_BASE_CHAIN_ID: z.coerce.number().int().positive().default(8453),
    /** Blocks including the payment's own; 3 is ~6 s on Base. */
    X402_CONFIRMATIONS: z.coerce.number().int().min(1).max(64).default(3),
    X402_SOLANA_RPC_URL: z.string().optional(),
    X402_SOLANA_PAY_TO: z.string().optional(),
    X402_SOLANA_USDC_MINT: z.string().default("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"),
    /** The `house` account x402 credentials are minted under (its name becomes the username label). */
    X402_HOUSE_ACCOUNT_ID: z.string().optional(),
    /** Secret: private key of the wallet that pays gas to settle EIP-3009 authorizations. */
    X402_GAS_WALLET_KEY: z.string().optional(),
    // Supplier payouts (docs/adr/0014). Unset: approvals still record, payouts wait queued.
    /** Base RPC the treasury pays through; defaults to X402_BASE_RPC_URL. */
    PAYOUT_BASE_RPC_URL: z.string().optional(),
    /** Secret: private key of the treasury wallet that holds USDC and pays suppliers on Base. */
    PAYOUT_TREASURY_KEY: z.string().optional(),
    /** Blocks including the payout's own before a withdrawal counts as paid. */
    PAYOUT_CONFIRMATIONS: z.coerce.number().int().min(1).max(64).default(3),
    /** Solana RPC the Solana treasury pays through; defaults to X402_SOLANA_RPC_URL (docs/adr/0019). */
    PAYOUT_SOLANA_RPC_URL: z.string().optional(),
    /** Secret: the Solana treasury's 64-byte keypair (base58, or solana-keygen's JSON array); holds USDC. */
    PAYOUT_SOLANA_TREASURY_KEY: z.string().optional(),
    /** The commitment a Solana payout must reach before the withdrawal counts as paid. */
    PAYOUT_SOLANA_COMMITMENT: z.enum(["confirmed", "finalized"]).default("finalized"),
    /**
     * `off` refuses bare tx hashes (front-runnable, docs/adr/0002 and 0008): only bound or EIP-3009
     * proofs buy. Unset: `off` in production, `on` elsewhere (local agents and tests pay bare).
     */
    X402_BARE_HASH: z.enum(["on", "off"]).optional(),
    X402_RATE_LIMIT_PURCHASE_PER_MINUTE: z.coerce.number().int().positive().default(10),
    /** Where agents connect; shown in the purchase response's proxy block. */
    GATEWAY_PUBLIC_HOST: z.string().default("localhost"),
    GATEWAY_HTTP_PORT: z.coerce.number().int().min(1).max(65535).default(7000),
    GATEWAY_SOCKS_PORT: z.coerce.number().int().min(1).max(65535).default(7001),
    /** The gateways' byte lease (first and grown) and hold lease (gateway-node/config.ts): the x402 caveats quote them. */
    GATEWAY_BYTE_LEASE: z.coerce.number().int().min(4096).max(1_048_576).default(262_144),
    GATEWAY_BYTE_LEASE_MAX: z.coerce.number().int().min(4096).max(67_108_864).default(8_388_608),
    GATEWAY_HOLD_LEASE_MS: z.coerce.number().int().min(500).max(300_000).default(30_000),
  })
  .superRefine((c, ctx) => {
    if (c.ENVIRONMENT === "production" && c.NEON_WS_PROXY) {
      ctx.addIssue({
        code: "custom",
        path: ["NEON_WS_PROXY"],
        message: "is a dev-only stand-in; unset it in production",
      });
    }
    for (const devOnly of ["DEV_CLIENT_IP_CLASS", "DEV_CLIENT_COUNTRY"] as const) {
      if (c.ENVIRONMENT === "production" && c[devOnly]) {
        ctx.addIssue({ code: "custom", path: [devOnly], message: "is dev-only; unset it in production" });
      }
    }
    if (c.ENVIRONMENT === "production" && !c.UPSTASH_REDIS_REST_URL.startsWith("https://")) {
      ctx.addIssue({
        code: "custom",
        path: ["UPSTASH_REDIS_REST_URL"],
        message: "must be https:// in production",
      });
    }
  })
  // A bare hash can be front-run by anyone watching the recipient: production refuses it unless told.
  .transform((c) => ({
    ...c,
    X402_BARE_HASH: c.X402_BARE_HASH ?? ((c.ENVIRONMENT === "production" ? "off" : "on") as "on" | "off"),
  }));

export type Config = z.output<typeof configSchema>;

const cache = new WeakMap<object, Config>();

/** Parses the Worker env once per isolate (env is the same object for every request). */
export function loadConfig(env: object): Config {
  let config = cache.get(env);
  if (!config) {
    config = parseConfig(configSchema, env as Record<string, unknown>);
    cache.set(env, config);
  }
  return config;
}
