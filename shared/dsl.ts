/**
 * The customer username DSL (PROTOCOL.md section 3):
 *   psx_<account>-<pool>-<country>[-<token>-<value>]...
 * lowercased and split on "-", so no value may contain a hyphen. Strict: an unknown token or a
 * malformed value is a UsernameParseError naming it and listing what is valid; nothing is ignored.
 */

export const POOLS = ["mbl", "peer", "any"] as const;
export type Pool = (typeof POOLS)[number];

export const ROTATIONS = ["sticky", "hard", "auto5", "auto10", "auto20", "auto60", "ondemand"] as const;
export type Rotation = (typeof ROTATIONS)[number];

export const IP_TYPES = ["mobile", "residential", "datacenter"] as const;
export type IpType = (typeof IP_TYPES)[number];

export const TOKENS = ["sid", "rot", "ttl", "carrier", "city", "iptype", "pin"] as const;
export type Token = (typeof TOKENS)[number];

export interface RouteRequest {
  /** the `<account>` part after `psx_` (the credential's accountLabel) */
  account: string;
  pool: Pool;
  /** ISO-2 lowercase, or "any" */
  country: string;
  sid?: string;
  /** present only with a sid; defaults to auto10 when a sid is given */
  rot?: Rotation;
  /** session life in seconds */
  ttl?: number;
  carrier?: string;
  city?: string;
  iptype?: IpType;
  /** `pin-device-<deviceId>`: exactly this device, or an error naming its state; never another */
  pinDevice?: string;
}

export class UsernameParseError extends Error {
  /** the token (or position name) that failed, e.g. "rot", "country", "psx_" */
  readonly token: string;
  readonly valid: readonly string[];
  constructor(token: string, message: string, valid: readonly string[]) {
    super(`${message}; valid: ${valid.join(", ")}`);
    this.name = "UsernameParseError";
    this.token = token;
    this.valid = valid;
  }
}

const ACCOUNT_RE = /^[a-z0-9_]{1,64}$/;
const COUNTRY_RE = /^[a-z]{2}$/;
const SID_RE = /^[a-z0-9_]{8,64}$/;
// carrier/city: free names without hyphens (the separator); underscores stand in for spaces.
const NAME_RE = /^[a-z0-9_.]{1,64}$/;
// Device ids are prefixed ids (agent_<hex>): no hyphens, so they fit the DSL as they are.
const DEVICE_RE = /^[a-z0-9_]{4,64}$/;
export const TTL_MIN = 60;
export const TTL_MAX = 86_400;

/** Minutes between moves for autoN rotations; 0 for modes that never move by time. */
export function rotationMinutes(rot: Rotation): number {
  const m = /^auto(\d+)$/.exec(rot);
  return m ? Number(m[1]) : 0;
}

/** Parses a proxy username; throws UsernameParseError (and nothing else) on any defect. */
export function parseUsername(raw: string): RouteRequest {
  const parts = String(raw).toLowerCase().split("-");
  const [head, pool, country, ...rest] = parts;
  if (head === undefined || !head.startsWith("psx_"))
    throw new UsernameParseError("psx_", "username must start with psx_<account>", ["psx_<account>"]);
  const account = head.slice(4);
  if (!ACCOUNT_RE.test(account))
    throw new UsernameParseError("account", `account "${account}" is not 1-64 of [a-z0-9_]`, [
      "[a-z0-9_]{1,64}",
    ]);
  if (pool === undefined || !(POOLS as readonly string[]).includes(pool))
    throw new UsernameParseError("pool", `pool "${pool ?? ""}" is not valid`, POOLS);
  if (country === undefined || !(country === "any" || COUNTRY_RE.test(country)))
    throw new UsernameParseError("country", `country "${country ?? ""}" is not ISO-2 or any`, [
      "<iso2>",
      "any",
    ]);
  const out: RouteRequest = { account, pool: pool as Pool, country };
  const seen = new Set<string>();
  for (let i = 0; i < rest.length; i += 2) {
    const token = rest[i] ?? "";
    const value = rest[i + 1];
    if (!(TOKENS as readonly string[]).includes(token))
      throw new UsernameParseError(token, `unknown token "${token}"`, TOKENS);
    if (seen.has(token)) throw new UsernameParseError(token, `token "${token}" given twice`, TOKENS);
    seen.add(token);
    if (value === undefined || value === "")
      throw new UsernameParseError(token, `token "${token}" has no value`, validValues(token as Token));
    if (token === "pin") {
      // pin-device-<deviceId>: the only three-part token.
      if (value !== "device")
        throw new UsernameParseError("pin", `pin "${value}" is not valid`, validValues("pin"));
      const deviceId = rest[i + 2];
      if (deviceId === undefined || !DEVICE_RE.test(deviceId))
        throw new UsernameParseError(
          "pin",
          `pin-device "${deviceId ?? ""}" is not a device id`,
          validValues("pin"),
        );
      out.pinDevice = deviceId;
      i++;
      continue;
    }
    applyToken(out, token as Exclude<Token, "pin">, value);
  }
  if (out.pinDevice !== undefined) {
    // One device is named: session and preference tokens could not be honoured, so they are refused.
    const extra = [...seen].find((t) => t !== "pin");
    if (extra)
      throw new UsernameParseError(extra, `token "${extra}" cannot be combined with pin-device`, [
        "pin-device-<deviceId>",
      ]);
  }
  if (out.sid === undefined && (out.rot !== undefined || out.ttl !== undefined))
    throw new UsernameParseError(out.rot !== undefined ? "rot" : "ttl", "rot and ttl need a sid", ["sid"]);
  if (out.sid !== undefined && out.rot === undefined) out.rot = "auto10";
  return out;
}

function validValues(token: Token): readonly string[] {
  switch (token) {
    case "sid":
      return ["[a-z0-9_]{8,64}"];
    case "rot":
      return ROTATIONS;
    case "ttl":
      return [`${TTL_MIN}-${TTL_MAX}`];
    case "iptype":
      return IP_TYPES;
    case "carrier":
    case "city":
      return ["[a-z0-9_.]{1,64}"];
    case "pin":
      return ["device-<deviceId>"];
  }
}

function applyToken(out: RouteRequest, token: Exclude<Token, "pin">, value: string): void {
  const bad = (what: string) =>
    new UsernameParseError(token, `${token} "${value}" ${what}`, validValues(token));
  switch (token) {
    case "sid":
      if (!SID_RE.test(value)) throw bad("is not 8-64 of [a-z0-9_]");
      out.sid = value;
      return;
    case "rot":
      if (!(ROTATIONS as readonly string[]).includes(value)) throw bad("is not a rotation mode");
      out.rot = value as Rotation;
      return;
    case "ttl": {
      if (!/^\d{1,6}$/.test(value)) throw bad("is not a whole number of seconds");
      const n = Number(value);
      if (n < TTL_MIN || n > TTL_MAX) throw bad("is out of range");
      out.ttl = n;
      return;
    }
    case "iptype":
      if (!(IP_TYPES as readonly string[]).includes(value)) throw bad("is not an IP type");
      out.iptype = value as IpType;
      return;
    case "carrier":
    case "city":
      if (!NAME_RE.test(value)) throw bad("is not 1-64 of [a-z0-9_.]");
      out[token] = value;
      return;
  }
}

/** The canonical username for a route request; parseUsername(formatUsername(r)) equals r. */
export function formatUsername(r: RouteRequest): string {
  const parts = [`psx_${r.account}`, r.pool, r.country];
  if (r.sid !== undefined) parts.push("sid", r.sid);
  if (r.rot !== undefined) parts.push("rot", r.rot);
  if (r.ttl !== undefined) parts.push("ttl", String(r.ttl));
  if (r.carrier !== undefined) parts.push("carrier", r.carrier);
  if (r.city !== undefined) parts.push("city", r.city);
  if (r.iptype !== undefined) parts.push("iptype", r.iptype);
  if (r.pinDevice !== undefined) parts.push("pin", "device", r.pinDevice);
  return parts.join("-");
}
