/**
 * The dedicated port (/v1/x402/proxy): one production modem rented for whole days, through the same
 * payment machinery as pool access. The price is the `x402_dedicated_pricing` settings row; the
 * purchase reserves a free modem and mints a key pinned to it in the payment's transaction
 * (docs/adr/0005-x402-dedicated-port.md).
 */
import { z } from "zod";
import type { Pool, Queryable } from "../../../shared/db/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { formatGb } from "../../../shared/x402/quote.ts";
import { mintCredential, usernameFor } from "./credentials.ts";
import {
  applyReservation,
  insertReservation,
  listFreeModems,
  lockFreeModem,
  type ModemFilter,
} from "./modem-reservations.ts";
import { getSetting } from "./settings.ts";
import type { VerifiedPayment } from "./x402-payment.ts";
import { type RedeemResult, type Refused, redeemPurchase } from "./x402-purchase.ts";

export const DEDICATED_PRICING_SETTING = "x402_dedicated_pricing";

const positiveInt = z.union([z.string().regex(/^[1-9]\d{0,17}$/), z.number().int().positive()]);
const pricingSchema = z
  .object({
    pricePerDayMicro: positiveInt,
    includedBytesPerDay: positiveInt,
    minDays: z.number().int().min(1).default(1),
    maxDays: z.number().int().min(1).max(365).default(30),
    rotationMinIntervalSeconds: z.number().int().min(1).max(86_400).default(60),
    enabled: z.boolean().default(true),
  })
  .refine((p) => p.minDays <= p.maxDays, "minDays must not exceed maxDays");

export interface DedicatedPricing {
  /** integer micro-USDC per day of one dedicated modem */
  pricePerDayMicro: bigint;
  /** traffic each day includes; the key's cap is this times the days bought */
  includedBytesPerDay: bigint;
  minDays: number;
  maxDays: number;
  rotationMinIntervalSeconds: number;
}

/** The dedicated price sheet; null (nothing on sale) when the row is missing, malformed or disabled. */
export async function readDedicatedPricing(db: Queryable): Promise<DedicatedPricing | null> {
  const parsed = pricingSchema.safeParse(await getSetting<unknown>(db, DEDICATED_PRICING_SETTING, null));
  if (!parsed.success || !parsed.data.enabled) return null;
  const p = parsed.data;
  return {
    pricePerDayMicro: BigInt(p.pricePerDayMicro),
    includedBytesPerDay: BigInt(p.includedBytesPerDay),
    minDays: p.minDays,
    maxDays: p.maxDays,
    rotationMinIntervalSeconds: p.rotationMinIntervalSeconds,
  };
}

export interface DedicatedOrder extends ModemFilter {
  days: number;
  priceMicro: bigint;
  includedBytes: bigint;
}

export type DedicatedOrderResult =
  | { ok: true; order: DedicatedOrder }
  | { ok: false; field: string; message: string };

const COUNTRY = /^([a-z]{2}|any)$/;
// Carrier names are stored the way the username DSL spells them (shared/pool.ts dslName).
const CARRIER = /^[a-z0-9_.]{1,64}$/;
const DAYS = /^[1-9]\d{0,2}$/;

/** Validates a dedicated order; refusals name the field. Availability is checked separately. */
export function parseDedicatedOrder(
  query: { country?: string; duration?: string; carrier?: string },
  pricing: DedicatedPricing,
): DedicatedOrderResult {
  const country = (query.country ?? "any").toLowerCase();
  if (!COUNTRY.test(country))
    return { ok: false, field: "country", message: "country must be an ISO-2 code or any" };
  const carrier = query.carrier?.toLowerCase();
  if (carrier !== undefined && !CARRIER.test(carrier))
    return { ok: false, field: "carrier", message: "carrier must be 1-64 of a-z, 0-9, _ and ." };
  if (query.duration === undefined)
    return { ok: false, field: "duration", message: "duration (whole days) is required" };
  const days = DAYS.test(query.duration) ? Number(query.duration) : Number.NaN;
  if (!(days >= pricing.minDays && days <= pricing.maxDays))
    return {
      ok: false,
      field: "duration",
      message: `duration must be whole days from ${pricing.minDays} to ${pricing.maxDays}, got ${JSON.stringify(query.duration)}`,
    };
  return {
    ok: true,
    order: {
      country,
      carrier,
      days,
      priceMicro: pricing.pricePerDayMicro * BigInt(days),
      includedBytes: pricing.includedBytesPerDay * BigInt(days),
    },
  };
}

/** What one payment buys: the same tx presented for another country, carrier or duration is refused. */
export function dedicatedProductKey(order: DedicatedOrder): string {
  return `proxy:${order.country}:${order.carrier ?? "any"}:${order.days}`;
}

/** The resource URL the 402 announces and a payment binding must name: canonical query order. */
export function dedicatedResource(origin: string, order: DedicatedOrder): string {
  const q = new URLSearchParams({ country: order.country, duration: String(order.days) });
  if (order.carrier) q.set("carrier", order.carrier);
  return `${origin}/v1/x402/proxy?${q}`;
}

export function usdcText(micro: bigint): string {
  return `${micro / 1_000_000n}.${(micro % 1_000_000n).toString().padStart(6, "0")}`;
}

/** The price sheet body shared by the pricing route and every 402. */
export function dedicatedCatalog(pricing: DedicatedPricing) {
  return {
    pricePerDayMicroUsdc: pricing.pricePerDayMicro.toString(),
    pricePerDayUsdc: usdcText(pricing.pricePerDayMicro),
    includedGBPerDay: formatGb(pricing.includedBytesPerDay),
    duration: { unit: "days", min: pricing.minDays, max: pricing.maxDays },
    rotation: {
      method: "POST",
      header: "X-Session-Token",
      minIntervalSeconds: pricing.rotationMinIntervalSeconds,
      note: "asks the modem to re-dial for a new carrier IP; only modems whose operator configured a rotation webhook can",
    },
  };
}

export type DedicatedRedeem = RedeemResult | Refused;

// A reservation that committed between our snapshot and our row lock wins the modem: try once more.
const RESERVE_ATTEMPTS = 2;

/**
 * Consumes `payment` for a dedicated modem: reserves a free one (row lock + partial UNIQUE index),
 * mints a key of the house account pinned to it, capped at the included traffic and expiring with
 * the reservation, then routes the modem to that key in Redis. `refused` (no free modem) consumes
 * nothing: the same payment can be presented again.
 */
export async function redeemDedicatedPurchase(
  deps: { pool: Pool; redis: RedisClient; now(): Date },
  input: {
    houseAccountId: string;
    payment: VerifiedPayment;
    order: DedicatedOrder;
    sessionToken: string | undefined;
    /** The session token a new mint gets (an EIP-3009 claim's owner token). */
    mintToken?: string;
  },
): Promise<DedicatedRedeem> {
  const { payment, order } = input;
  for (let attempt = 1; ; attempt++) {
    const result = await redeemPurchase(
      deps,
      {
        houseAccountId: input.houseAccountId,
        payment,
        product: "proxy",
        productKey: dedicatedProductKey(order),
        priceMicro: order.priceMicro,
        sessionToken: input.sessionToken,
        ...(input.mintToken ? { mintToken: input.mintToken } : {}),
      },
      async (tx, { consumptionKey, now }) => {
        const candidates = await listFreeModems({ db: tx, redis: deps.redis }, order);
        const locked = await lockFreeModem(
          tx,
          candidates.map((m) => m.id),
        );
        if (!locked.ok) return { ok: false, reason: "no_free_modem" };
        const endsAt = new Date(now.getTime() + order.days * 86_400_000);
        const minted = await mintCredential({
          deps: { db: tx, now: deps.now },
          input: {
            accountId: input.houseAccountId,
            actor: `x402:${consumptionKey}`,
            tier: "mbl",
            pool: "mbl",
            country: locked.modem.country,
            capBytes: Number(order.includedBytes),
            expiresAt: endsAt,
            endpointId: locked.modem.id,
            name: `x402 proxy ${payment.network} ${payment.txRef.slice(0, 18)}`,
          },
        });
        if (!minted) throw new Error(`x402 house account ${input.houseAccountId} does not exist`);
        const reservationId = await insertReservation(tx, {
          modemExitId: locked.modem.id,
          credentialId: minted.credential.id,
          startsAt: now,
          endsAt,
          actor: `x402:${consumptionKey}`,
        });
        if (!reservationId) return { ok: false, reason: "reservation_race" };
        return { ok: true, ...minted, username: usernameFor(minted.credential) };
      },
    );
    if (result.kind === "refused" && result.reason === "reservation_race" && attempt < RESERVE_ATTEMPTS)
      continue;
    if (result.kind === "refused") return { kind: "refused", reason: "no_free_modem" };
    if (result.kind === "minted" && result.credential.endpoint_id) {
      // After the commit (Postgres first, docs/adr/0004): a failure here heals at the next cron
      // reconcile; until then the pinned key gets E_NO_STOCK, never another modem.
      await applyReservation(deps.redis, result.credential.endpoint_id, result.credential.id).catch((err) =>
        console.error(
          JSON.stringify({ level: "error", msg: "reservation not applied in Redis", error: String(err) }),
        ),
      );
    }
    return result;
  }
}
