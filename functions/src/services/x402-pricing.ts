/** The x402 price sheet: tiers and prices are the `x402_pricing` settings row, never constants in code. */
import { z } from "zod";
import type { Queryable } from "../../../shared/db/pool.ts";
import { ROTATIONS } from "../../../shared/dsl.ts";
import { BASE_USDC_EIP712, CAIP2 } from "../../../shared/x402/networks.ts";
import {
  BYTES_PER_GB,
  DEFAULT_DURATION_DAYS,
  formatGb,
  MAX_DURATION_DAYS,
  MIN_TRAFFIC_BYTES,
  type PaymentOption,
  type Quote,
  quotePurchase,
} from "../../../shared/x402/quote.ts";
import { getSetting } from "./settings.ts";
import { liveCountries } from "./stock.ts";
import type { X402Rails } from "./x402-config.ts";

export const PRICING_SETTING = "x402_pricing";

const microText = z.union([z.string().regex(/^[1-9]\d{0,15}$/), z.number().int().positive()]);
const pricingSchema = z.object({
  tiers: z.record(
    z.string().regex(/^[a-z]{2,8}$/),
    z.object({
      pricePerGbMicro: microText,
      enabled: z.boolean().default(true),
      description: z.string().optional(),
    }),
  ),
});

export interface Tier {
  name: string;
  pricePerGbMicro: bigint;
  description: string;
}

// Only `mbl` is sold until community tiers have routing-level enforcement of IP type.
const DEFAULT_PRICING = {
  tiers: { mbl: { pricePerGbMicro: "4000000", enabled: true, description: "production mobile modems" } },
};

/** The tiers on sale; a malformed settings row falls back to nothing on sale rather than a guessed price. */
export async function readTiers(db: Queryable): Promise<Tier[]> {
  const raw = await getSetting<unknown>(db, PRICING_SETTING, DEFAULT_PRICING);
  const parsed = pricingSchema.safeParse(raw);
  if (!parsed.success) return [];
  return Object.entries(parsed.data.tiers)
    .filter(([, t]) => t.enabled)
    .map(([name, t]) => ({
      name,
      pricePerGbMicro: BigInt(t.pricePerGbMicro),
      description: t.description ?? (name === "mbl" ? "production mobile modems" : name),
    }));
}

/** The pool names a tier routes to (the credential's quality contract). */
export function poolOfTier(tier: string): "mbl" | "peer" {
  return tier === "peer" ? "peer" : "mbl";
}

export function paymentOptions(rails: X402Rails): PaymentOption[] {
  const options: PaymentOption[] = [];
  if (rails.base)
    options.push({
      network: "base",
      payTo: rails.base.payTo,
      asset: rails.base.usdc,
      // EIP-712 domain of USDC: what x402 `exact` clients sign an EIP-3009 authorization against.
      extra: { ...BASE_USDC_EIP712 },
    });
  if (rails.solana) options.push({ network: "solana", payTo: rails.solana.payTo, asset: rails.solana.mint });
  return options;
}

export interface PoolOrder {
  tier: Tier;
  country: string;
  quote: Quote;
  sid: string | undefined;
  rot: string | undefined;
}

export type OrderResult = { ok: true; order: PoolOrder } | { ok: false; field: string; message: string };

const SID = /^[a-z0-9_]{8,64}$/;

/** Validates a pool order against the tiers on sale and the live countries; refusals name the field. */
export function parsePoolOrder(
  query: { tier?: string; country?: string; traffic?: string; duration?: string; sid?: string; rot?: string },
  tiers: Tier[],
  countries: string[],
): OrderResult {
  const tierName = (query.tier ?? "mbl").toLowerCase();
  const tier = tiers.find((t) => t.name === tierName);
  if (!tier)
    return {
      ok: false,
      field: "tier",
      message: `tier ${JSON.stringify(query.tier)} is not on sale; tiers: ${tiers.map((t) => t.name).join(", ") || "(none)"}`,
    };
  const country = (query.country ?? "any").toLowerCase();
  if (country === "any" ? countries.length === 0 : !countries.includes(country))
    return {
      ok: false,
      field: "country",
      message: `country ${JSON.stringify(query.country ?? "any")} has no routable ${tier.name} stock; live: ${countries.join(", ") || "(none)"}, or any`,
    };
  if (query.traffic === undefined)
    return { ok: false, field: "traffic", message: "traffic (GB) is required" };
  const quoted = quotePurchase({
    pricePerGbMicro: tier.pricePerGbMicro,
    traffic: query.traffic,
    durationDays: query.duration,
  });
  if (!quoted.ok) return quoted;
  const sid = query.sid?.toLowerCase();
  if (sid !== undefined && !SID.test(sid))
    return { ok: false, field: "sid", message: "sid must be 8-64 characters of a-z, 0-9 and _" };
  const rot = query.rot?.toLowerCase();
  if (rot !== undefined && !(ROTATIONS as readonly string[]).includes(rot))
    return { ok: false, field: "rot", message: `rot must be one of ${ROTATIONS.join(", ")}` };
  if (rot !== undefined && sid === undefined)
    return {
      ok: false,
      field: "rot",
      message: "rot needs a sid: without one every connection is a fresh pick",
    };
  return { ok: true, order: { tier, country, quote: quoted.quote, sid, rot } };
}

/** What a purchase is, for refusing one payment presented for two different things. */
export function productKey(order: PoolOrder): string {
  return `pool:${order.tier.name}:${order.country}:${order.quote.trafficBytes}:${order.quote.durationDays}`;
}

/** The resource URL the 402 announces and a payment binding must name: canonical query order. */
export function poolResource(origin: string, order: PoolOrder): string {
  const q = new URLSearchParams({
    tier: order.tier.name,
    country: order.country,
    traffic: order.quote.trafficGb,
    duration: String(order.quote.durationDays),
  });
  if (order.sid) q.set("sid", order.sid);
  if (order.rot) q.set("rot", order.rot);
  return `${origin}/v1/x402/pool?${q}`;
}

export const DSL_SUMMARY = {
  format:
    "psx_<account>-<pool>-<country>[-sid-<id>][-rot-<mode>][-ttl-<seconds>][-carrier-<name>][-city-<name>]",
  pools: ["mbl"],
  country: "ISO-2 lowercase, or any",
  sid: "8-64 characters of a-z, 0-9, _; without a sid every connection is a fresh pick",
  rot: [...ROTATIONS],
  example: "psx_x402pool-mbl-us-sid-myjob123-rot-sticky",
};

// Per isolate, a few seconds: a burst of agents (or of retries of one payment) must not cost a
// Postgres connection each just to re-read a price sheet that changes by hand and a rollup that
// changes once a minute. Values only: promises must not cross Worker requests.
const CATALOG_TTL_MS = 10_000;
let cachedCatalog: { at: number; tiers: Tier[]; countries: string[] } | null = null;

async function tiersAndCountries(db: Queryable): Promise<{ tiers: Tier[]; countries: string[] }> {
  const now = Date.now();
  if (cachedCatalog && now - cachedCatalog.at < CATALOG_TTL_MS) return cachedCatalog;
  const [tiers, countries] = [await readTiers(db), await liveCountries(db, "mbl")];
  cachedCatalog = { at: now, tiers, countries };
  return cachedCatalog;
}

/** The networks a price sheet lists: where to pay which asset (none while no rail is configured). */
export function networkSheet(rails: X402Rails | null) {
  if (!rails) return [];
  return paymentOptions(rails).map((o) => ({
    network: o.network,
    caip2: CAIP2[o.network],
    payTo: o.payTo,
    asset: o.asset,
    decimals: 6,
  }));
}

/** The catalog every 402 and the pricing route carry, with the parsed tiers and live countries. */
export async function catalog(db: Queryable, origin: string, rails: X402Rails | null) {
  const { tiers, countries } = await tiersAndCountries(db);
  const body = {
    tiers: tiers.map((t) => ({
      tier: t.name,
      description: t.description,
      pricePerGbMicroUsdc: t.pricePerGbMicro.toString(),
      pricePerGbUsdc: `${t.pricePerGbMicro / 1_000_000n}.${(t.pricePerGbMicro % 1_000_000n).toString().padStart(6, "0")}`,
    })),
    traffic: {
      unit: "GB (10^9 bytes)",
      minimumGB: formatGb(MIN_TRAFFIC_BYTES),
      bytesPerGB: BYTES_PER_GB.toString(),
    },
    duration: { unit: "days", default: DEFAULT_DURATION_DAYS, max: MAX_DURATION_DAYS, price: "free" },
    networks: networkSheet(rails),
    countries,
    dsl: DSL_SUMMARY,
    stockUrl: `${origin}/v1/gateway/pool/stock`,
  };
  return { body, tiers, countries };
}
