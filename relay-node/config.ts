import { z } from "zod";
import { logSettings, parseConfig, refuseDevOnly } from "../shared/config.ts";
import { randomHex } from "../shared/ids.ts";

const port = z.coerce.number().int().min(0).max(65535);
const ms = (dflt: number, max = 24 * 3600_000) => z.coerce.number().int().min(1).max(max).default(dflt);

const schema = z.object({
  ...logSettings,
  /** Must be unique per relay: presence removal only deletes entries written under this id. */
  RELAY_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/)
    .default(() => `relay_${randomHex(6)}`),
  RELAY_HOST: z.string().min(1).default("127.0.0.1"),
  RELAY_PORT: port.default(8080),
  /** The internal port carries tunnels for the gateway: bind it to the private network only. */
  RELAY_INTERNAL_HOST: z.string().min(1).default("127.0.0.1"),
  RELAY_INTERNAL_PORT: port.default(8081),
  JWT_SECRET: z.string().min(16, "JWT_SECRET must be at least 16 characters"),
  RELAY_SHARED_SECRET: z.string().min(16, "RELAY_SHARED_SECRET must be at least 16 characters"),
  /** Rotation only (docs/deploy.md): the old secrets, still accepted until every party has the new one. */
  JWT_SECRET_PREVIOUS: z.string().min(16, "JWT_SECRET_PREVIOUS must be at least 16 characters").optional(),
  RELAY_SHARED_SECRET_PREVIOUS: z
    .string()
    .min(16, "RELAY_SHARED_SECRET_PREVIOUS must be at least 16 characters")
    .optional(),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "REDIS_URL must be a redis:// or rediss:// URL"),
  /** What peers are told to connect to; defaults to ws://RELAY_HOST:port once listening. */
  RELAY_PUBLIC_URL: z.url({ protocol: /^wss?$/ }).optional(),
  /** What gateways reach the internal port at; defaults to http://RELAY_INTERNAL_HOST:port. */
  RELAY_INTERNAL_URL: z.url({ protocol: /^https?$/ }).optional(),
  RELAY_REGION: z.string().min(1).default("local"),
  /** JSON object region -> public relay URL, used for relay_redirect. */
  REGION_RELAYS: z
    .string()
    .default("{}")
    .transform((text, ctx) => {
      try {
        return z.record(z.string(), z.url({ protocol: /^wss?$/ })).parse(JSON.parse(text));
      } catch {
        ctx.addIssue({
          code: "custom",
          message: "REGION_RELAYS must be a JSON object of region -> ws(s) URL",
        });
        return z.NEVER;
      }
    }),
  IDLE_TIMEOUT_MS: ms(90_000),
  /**
   * While tunnels are open, how far V8 lets the old generation grow past what the last major GC
   * kept, in percent (V8's --heap-growing-percent, which NODE_OPTIONS refuses); 0 leaves V8 its own
   * factor. relay-node/heap.ts, ADR 0032.
   */
  RELAY_HEAP_GROWING_PERCENT: z.coerce.number().int().min(0).max(400).default(100),
  CONNECT_TIMEOUT_MS: ms(10_000),
  /** Presence hash TTL; the relay refreshes every PRESENCE_REFRESH_MS, well inside it. */
  PRESENCE_TTL_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  PRESENCE_REFRESH_MS: ms(10_000),
  /**
   * How often the relay renews its `relays:alive` entry, which then lasts three of these (never
   * past the presence TTL): a killed relay stops being handed out within 9 s (presence.ts).
   */
  RELAY_ALIVE_REFRESH_MS: ms(3_000, 60_000),
  /** The contract is "at most 5 s apart" (docs/internal.md), hence the cap. */
  COUNTER_FLUSH_MS: ms(2_000, 5_000),
  /** How long close() waits for open tunnels to finish before cutting them. */
  DRAIN_TIMEOUT_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
  MAX_SOCKETS_PER_DEVICE: z.coerce.number().int().min(1).max(64).default(8),
  /** flow-v1: how far a fast tunnel's window may grow from 256 KiB (relay-node/tunnels.ts). */
  TUNNEL_WINDOW_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(256 * 1024)
    .max(64 * 1024 * 1024)
    .default(8 * 1024 * 1024),
  /** flow-v1: window growth over all open tunnels together; 0 keeps every window at 256 KiB. */
  TUNNEL_WINDOW_BUDGET_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(4 * 1024 * 1024 * 1024)
    .default(64 * 1024 * 1024),
  /**
   * Path of an IP-to-ASN table (iptoasn.com TSV: start, end, AS, country, name). The relay classifies
   * each socket's address with it; unset, it trusts the class and country in the token.
   */
  RELAY_ASN_TABLE: z.string().min(1).optional(),
  /** Fallback for missed revocation messages: how often every held device's generation is re-read. */
  REVOCATION_SWEEP_MS: ms(10_000, 600_000),
});

export type RelayConfig = z.output<typeof schema>;
export type RelayEnv = z.input<typeof schema>;

/** Parses the relay's environment once; throws ConfigError naming each bad variable. */
export function loadRelayConfig(env: Record<string, string | undefined>): RelayConfig {
  refuseDevOnly(env, []);
  return parseConfig(schema, { ...flyDefaults(env), ...definedOnly(env) });
}

/**
 * On Fly machines (FLY_MACHINE_ID and FLY_APP_NAME set by the platform) the relay's id and the URL
 * gateways reach its internal port at come from the machine's private DNS name, so every machine of
 * a regional app is addressed on its own without per-machine configuration. Explicit values win.
 */
function flyDefaults(env: Record<string, string | undefined>): Record<string, string> {
  const machine = env.FLY_MACHINE_ID;
  const app = env.FLY_APP_NAME;
  if (!machine || !app) return {};
  return {
    // Machine ids are unique across Fly, and short enough for RELAY_ID's 64 characters.
    RELAY_ID: `fly_${machine}`,
    RELAY_INTERNAL_URL: `http://${machine}.vm.${app}.internal:${env.RELAY_INTERNAL_PORT ?? 8081}`,
  };
}

function definedOnly(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}
