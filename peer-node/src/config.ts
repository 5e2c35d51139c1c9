import { randomBytes } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { DEFAULT_BACKOFF } from "./backoff.ts";
import type { PeerTiming } from "./peer.ts";

/**
 * Peer configuration: every flag of the fleet guide with its environment variable and default,
 * plus the API base URL, the development flag for private targets and the relay allow-list.
 * One zod schema serves both the CLI (flags + env) and the library (`startPeer(options)`).
 */

export const DEFAULT_API_URL = "https://api.peerproxy.dev";
export const DEFAULT_STATE_FILE = join(homedir(), ".peerproxy-peer-state.json");

const relayUrl = z
  .string()
  .refine((v) => /^wss?:\/\//.test(v) && URL.canParse(v), { message: "a ws:// or wss:// URL" });

export const peerConfigSchema = z.object({
  apiKey: z.string().regex(/^psx_[A-Za-z0-9_-]+$/, { message: "an API key starting with psx_" }),
  name: z.string().min(1).max(64, { message: "1-64 characters" }).optional(),
  country: z
    .string()
    .regex(/^[A-Za-z]{2}$/, { message: "an ISO-2 country code such as US" })
    .transform((c) => c.toUpperCase())
    .default("US"),
  connections: z.coerce
    .number({ message: "an integer 1-8" })
    .int({ message: "an integer 1-8" })
    .min(1, { message: "an integer 1-8" })
    .max(8, { message: "an integer 1-8" })
    .default(4),
  wallet: z.string().min(1, { message: "a non-empty wallet address" }).optional(),
  stateFile: z.string().min(1).default(DEFAULT_STATE_FILE),
  relayUrl: relayUrl.optional(),
  verbose: z.boolean().default(false),
  apiUrl: z
    .string()
    .refine((v) => /^https?:\/\//.test(v) && URL.canParse(v), { message: "an http:// or https:// URL" })
    .transform((v) => v.replace(/\/+$/, ""))
    .default(DEFAULT_API_URL),
  allowPrivateTargets: z.boolean().default(false),
  /** Hosts (or parent domains) a relay_redirect may send us to; empty = the registered relay's domain. */
  relayAllowlist: z
    .array(z.string().regex(/^[A-Za-z0-9.:-]+$/, { message: "comma-separated host names" }))
    .default([]),
});

export type PeerConfigInput = z.input<typeof peerConfigSchema>;
export type PeerConfig = z.output<typeof peerConfigSchema> & { name: string; nameWasRandom: boolean };

interface FlagSpec {
  flag: string;
  env: string;
  key: keyof PeerConfigInput;
  kind: "string" | "bool" | "list";
  accepts: string;
}

/** Flag, env var and what is accepted, in the guide's order; the CLI's usage text is built from it. */
export const FLAGS: readonly FlagSpec[] = [
  { flag: "key", env: "API_KEY", key: "apiKey", kind: "string", accepts: "required, your psx_ API key" },
  {
    flag: "name",
    env: "AGENT_NAME",
    key: "name",
    kind: "string",
    accepts: "1-64 characters (default: random)",
  },
  {
    flag: "country",
    env: "COUNTRY",
    key: "country",
    kind: "string",
    accepts: "ISO-2 country hint (default US)",
  },
  {
    flag: "connections",
    env: "WS_CONNECTIONS",
    key: "connections",
    kind: "string",
    accepts: "an integer 1-8 (default 4)",
  },
  {
    flag: "wallet",
    env: "WALLET",
    key: "wallet",
    kind: "string",
    accepts: "payout wallet address (optional)",
  },
  {
    flag: "state",
    env: "PEER_STATE_FILE",
    key: "stateFile",
    kind: "string",
    accepts: `path (default ${DEFAULT_STATE_FILE})`,
  },
  {
    flag: "relay",
    env: "RELAY_URL",
    key: "relayUrl",
    kind: "string",
    accepts: "pin a relay ws:// or wss:// URL",
  },
  { flag: "verbose", env: "VERBOSE", key: "verbose", kind: "bool", accepts: "true or false" },
  {
    flag: "api",
    env: "PEER_API_URL",
    key: "apiUrl",
    kind: "string",
    accepts: `API base URL (default ${DEFAULT_API_URL})`,
  },
  {
    flag: "allow-private",
    env: "PEER_ALLOW_PRIVATE_TARGETS",
    key: "allowPrivateTargets",
    kind: "bool",
    accepts: "true or false; development only: allow loopback/private targets",
  },
  {
    flag: "relay-allow",
    env: "RELAY_ALLOWLIST",
    key: "relayAllowlist",
    kind: "list",
    accepts: "comma-separated relay hosts/domains a redirect may go to",
  },
];

export type ParseResult =
  | { ok: true; config: PeerConfig }
  | { ok: false; message: string }
  | { ok: "help"; text: string };

function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (t === "true" || t === "1" || t === "yes") return true;
  if (t === "false" || t === "0" || t === "no" || t === "") return false;
  return undefined;
}

export function usage(): string {
  const rows = FLAGS.map((f) => `  -${f.flag.padEnd(14)} ${f.env.padEnd(27)} ${f.accepts}`);
  return [
    "usage: peerproxy-peer -key=psx_... -name=rig-001 [flags]",
    "",
    "  flag            env",
    ...rows,
  ].join("\n");
}

/** The guide's random default name; callers must warn that a fleet needs stable names. */
export function randomName(): string {
  return `peer-${randomBytes(4).toString("hex")}`;
}

/**
 * Parses `-flag=value`, `--flag=value`, `-flag value` and `--flag value` (booleans take no separate
 * value, as with Go's flag package) over the environment; a flag beats its env var.
 */
export function parseCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ParseResult {
  const raw = new Map<FlagSpec, string>();
  const source = new Map<FlagSpec, string>();
  for (const spec of FLAGS) {
    const v = env[spec.env];
    if (v !== undefined && v !== "") {
      raw.set(spec, v);
      source.set(spec, spec.env);
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--?([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (!m)
      return { ok: false, message: `unexpected argument "${arg}"; flags look like -key=psx_... (try -help)` };
    const name = m[1]!;
    if (name === "help" || name === "h") return { ok: "help", text: usage() };
    const spec = FLAGS.find((f) => f.flag === name);
    if (!spec)
      return {
        ok: false,
        message: `unknown flag -${name}; accepted: ${FLAGS.map((f) => `-${f.flag}`).join(" ")}`,
      };
    let value = m[2];
    if (value === undefined) {
      if (spec.kind === "bool") value = "true";
      else {
        const next = argv[i + 1];
        if (next === undefined) return { ok: false, message: `flag -${name} needs a value: ${spec.accepts}` };
        value = next;
        i++;
      }
    }
    raw.set(spec, value);
    source.set(spec, `-${spec.flag}`);
  }

  const input: Record<string, unknown> = {};
  for (const [spec, value] of raw) {
    if (spec.kind === "bool") {
      const b = parseBool(value);
      if (b === undefined) return { ok: false, message: badValue(spec, source.get(spec)!, value) };
      input[spec.key] = b;
    } else if (spec.kind === "list") {
      input[spec.key] = value
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    } else input[spec.key] = value;
  }
  if (input["apiKey"] === undefined)
    return { ok: false, message: "missing API key: set -key=psx_... or API_KEY (your psx_ API key)" };

  const parsed = peerConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const spec = FLAGS.find((f) => f.key === issue.path[0])!;
    return {
      ok: false,
      message: badValue(spec, source.get(spec) ?? `-${spec.flag}`, String(raw.get(spec) ?? "")),
    };
  }
  return { ok: true, config: withName(parsed.data) };
}

function badValue(spec: FlagSpec, from: string, value: string): string {
  const shown = spec.key === "apiKey" ? "(hidden)" : JSON.stringify(value);
  const other = from.startsWith("-") ? spec.env : `-${spec.flag}`;
  return `invalid value ${shown} for ${from} (${other}): accepted: ${spec.accepts}`;
}

function withName(data: z.output<typeof peerConfigSchema>): PeerConfig {
  if (data.name) return { ...data, name: data.name, nameWasRandom: false };
  return { ...data, name: randomName(), nameWasRandom: true };
}

/** Library entry: validates options with the same schema; throws a message naming the option. */
export function resolveConfig(options: PeerConfigInput): PeerConfig {
  const parsed = peerConfigSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`invalid peer option ${String(issue.path[0])}: ${issue.message}`);
  }
  return withName(parsed.data);
}

export const RANDOM_NAME_WARNING =
  "no -name/AGENT_NAME set, using a random name. Every restart without the saved state file becomes a NEW " +
  "device: fleets MUST give each instance a stable, unique name (e.g. -name=rig-001) and persist -state.";

/**
 * Test knob, not a fleet setting: PEER_RECONNECT_BASE_MS scales the reconnect timing (base, 24x
 * ceiling, 0.4x jitter, 6x failover check interval: the guide's 5 s / 120 s / 2 s / 30 s shape) so
 * end-to-end tests do not wait for production delays. Unset = the production timing.
 */
export function reconnectTimingFromEnv(
  env: Readonly<Record<string, string | undefined>>,
):
  | { ok: true; timing: Partial<Pick<PeerTiming, "backoff" | "failoverCheckMs">> }
  | { ok: false; message: string } {
  const raw = env["PEER_RECONNECT_BASE_MS"];
  if (raw === undefined || raw === "") return { ok: true, timing: {} };
  const base = Number(raw);
  if (!Number.isInteger(base) || base < 10 || base > 60_000)
    return {
      ok: false,
      message: `invalid value ${JSON.stringify(raw)} for PEER_RECONNECT_BASE_MS: accepted: an integer 10-60000`,
    };
  return {
    ok: true,
    timing: {
      backoff: {
        baseMs: base,
        maxMs: base * 24,
        jitterMs: Math.round(base * 0.4),
        stableMs: DEFAULT_BACKOFF.stableMs,
      },
      failoverCheckMs: base * 6,
    },
  };
}
