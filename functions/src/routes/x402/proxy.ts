/**
 * GET|POST /v1/x402/proxy: a dedicated production modem for whole days. Unpaid -> 402 price sheet
 * (503 when no modem is free); paid -> verify on-chain, reserve a free modem and mint a key pinned to
 * it, once; a payment that finds no free modem is not consumed.
 */
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import { formatGb } from "../../../../shared/x402/quote.ts";
import type { AppEnv } from "../../env.ts";
import type { CredentialRow } from "../../services/credentials.ts";
import {
  countFree,
  listFreeModems,
  type ReservationRow,
  reservationOfCredential,
} from "../../services/modem-reservations.ts";
import { dedicatedCaveats } from "../../services/x402-caveats.ts";
import {
  type DedicatedOrder,
  type DedicatedPricing,
  dedicatedCatalog,
  dedicatedProductKey,
  dedicatedResource,
  parseDedicatedOrder,
  readDedicatedPricing,
  redeemDedicatedPurchase,
} from "../../services/x402-dedicated.ts";
import { purchase } from "../../services/x402-paid-flow.ts";
import type { X402Session } from "../../services/x402-purchase.ts";
import {
  creditOf,
  HOW_TO_PAY,
  originOf,
  paymentRequired,
  proxyEndpoint,
  purchaseAnswer,
  refusalError,
} from "./answers.ts";
import { fieldError, paidContext, requestProof, requireRails, usedOf } from "./guards.ts";
import { Credit, errorResponse, ProxyEndpoint, PurchasePayment, registerPurchaseRoute } from "./schemas.ts";

export const MANAGE_PROXY = "/v1/x402/manage/proxy";

/** The price sheet, or 503: dedicated ports are sold only from a valid `x402_dedicated_pricing` row. */
export async function requireDedicatedPricing(c: Context<AppEnv>): Promise<DedicatedPricing> {
  const pricing = await readDedicatedPricing(c.get("deps").db);
  if (!pricing)
    throw new ApiError(
      "E_UNAVAILABLE",
      "dedicated ports are not on sale here: the x402_dedicated_pricing settings row is missing, malformed or disabled",
      { headers: { "Retry-After": "60", "Cache-Control": "no-store" } },
    );
  return pricing;
}

type Availability = ReturnType<typeof countFree>;

function freeFor(availability: Availability, order: Pick<DedicatedOrder, "country" | "carrier">): number {
  const countries = order.country === "any" ? Object.values(availability) : [availability[order.country]];
  let n = 0;
  for (const c of countries) {
    if (!c) continue;
    n += order.carrier === undefined ? c.free : (c.carriers[order.carrier] ?? 0);
  }
  return n;
}

function noFreeModem(
  order: DedicatedOrder,
  availability: Availability,
  consumed?: { consumptionKey: string; resumeToken: string | null },
) {
  const where = `${order.country}${order.carrier ? `/${order.carrier}` : ""}`;
  return new ApiError(
    "E_NO_FREE_MODEM",
    consumed
      ? consumed.resumeToken
        ? `no dedicated modem is free for ${where} right now; your payment ${consumed.consumptionKey} was NOT consumed: present the same payment header with X-Session-Token: <details.sessionToken> once one is free (see availability)`
        : `no dedicated modem is free for ${where} right now; your payment ${consumed.consumptionKey} was NOT consumed: present the same proof again once one is free (see availability), or for another order of the same price`
      : `no dedicated modem is free for ${where} right now; nothing was charged, do not pay yet (see availability)`,
    {
      details: {
        availability,
        ...(consumed ? { consumed: false, consumptionKey: consumed.consumptionKey } : {}),
        ...(consumed?.resumeToken ? { sessionToken: consumed.resumeToken } : {}),
      },
      headers: { "Retry-After": "60", "Cache-Control": "no-store" },
    },
  );
}

/** A reservation as the renter sees it (never the modem's address). */
export function reservationView(reservation: ReservationRow | null, now: Date) {
  if (!reservation) return null;
  const endsAt = new Date(reservation.ends_at);
  return {
    id: reservation.id,
    active: !reservation.released_at && endsAt > now,
    startsAt: new Date(reservation.starts_at).toISOString(),
    expiresAt: endsAt.toISOString(),
    releasedAt: reservation.released_at ? new Date(reservation.released_at).toISOString() : null,
  };
}

export function rotationView(
  reservation: ReservationRow | null,
  pricing: Pick<DedicatedPricing, "rotationMinIntervalSeconds">,
) {
  return {
    available: Boolean(reservation?.rotation_url),
    method: "POST",
    header: "X-Session-Token",
    minIntervalSeconds: pricing.rotationMinIntervalSeconds,
  };
}

/** The access answer for a dedicated port (purchase, connection, regenerate). */
export function dedicatedAccessBody(
  c: Context<AppEnv>,
  input: {
    session: X402Session;
    credential: CredentialRow;
    reservation: ReservationRow | null;
    secret: string;
    sessionToken: string;
    usedBytes: number;
    pricing: Pick<DedicatedPricing, "rotationMinIntervalSeconds">;
  },
) {
  const { now } = c.get("deps");
  const origin = originOf(c);
  const { credential, reservation } = input;
  const expiresAt = credential.expires_at ? new Date(credential.expires_at).toISOString() : null;
  const startsAt = reservation ? new Date(reservation.starts_at) : null;
  const endsAt = reservation ? new Date(reservation.ends_at) : null;
  return {
    product: {
      type: "proxy" as const,
      tier: credential.tier,
      country: reservation?.country ?? credential.country,
      carrier: reservation?.carrier ?? null,
      durationDays:
        startsAt && endsAt ? Math.round((endsAt.getTime() - startsAt.getTime()) / 86_400_000) : null,
      includedGB: Number(formatGb(BigInt(credential.cap_bytes))),
      startsAt: startsAt?.toISOString() ?? null,
      expiresAt,
    },
    proxy: proxyEndpoint(c, input.session.username, input.secret),
    expiresAt,
    rotationUrl: `${origin}${MANAGE_PROXY}/rotate`,
    rotation: rotationView(reservation, input.pricing),
    reservation: reservationView(reservation, now()),
    credit: creditOf(credential, input.usedBytes),
    sessionToken: input.sessionToken,
    manage: {
      header: "X-Session-Token",
      status: `${origin}${MANAGE_PROXY}/status`,
      usage: `${origin}${MANAGE_PROXY}/usage?days=7`,
      connection: `${origin}${MANAGE_PROXY}/connection`,
      regenerate: `${origin}${MANAGE_PROXY}/regenerate`,
      rotate: `${origin}${MANAGE_PROXY}/rotate`,
      topup: `${origin}${MANAGE_PROXY}/topup?traffic=1`,
    },
    caveats: dedicatedCaveats(c.get("deps").config),
  };
}

export const Reservation = z
  .object({
    id: z.string(),
    active: z.boolean(),
    startsAt: z.string().nullable(),
    expiresAt: z.string().nullable(),
    releasedAt: z.string().nullable(),
  })
  .openapi("X402Reservation");

export const Rotation = z
  .object({
    available: z.boolean().openapi({ description: "the modem's operator configured a rotation webhook" }),
    method: z.string(),
    header: z.string(),
    minIntervalSeconds: z.number().int(),
  })
  .openapi("X402Rotation");

export const DedicatedAccess = z
  .object({
    product: z.object({
      type: z.literal("proxy"),
      tier: z.string(),
      country: z.string(),
      carrier: z.string().nullable(),
      durationDays: z.number().int().nullable(),
      includedGB: z.number(),
      startsAt: z.string().nullable(),
      expiresAt: z.string().nullable(),
    }),
    proxy: ProxyEndpoint,
    expiresAt: z.string().nullable(),
    rotationUrl: z
      .string()
      .openapi({ description: "POST with X-Session-Token: the modem re-dials for a new IP" }),
    rotation: Rotation,
    reservation: Reservation.nullable(),
    credit: Credit,
    sessionToken: z.string().openapi({ description: "x402s_...; keep it: the only manage/recovery handle" }),
    manage: z.record(z.string(), z.string()),
    caveats: z.array(z.string()),
    payment: PurchasePayment.optional(),
  })
  .openapi("X402DedicatedAccess");

const ProxyQuery = z.object({
  country: z.string().optional().openapi({ example: "us", description: "ISO-2 with a free modem, or any" }),
  duration: z
    .string({ error: "duration (whole days) is required" })
    .openapi({ example: "7", description: "whole days (see /v1/x402/proxy/pricing)" }),
  carrier: z.string().optional().openapi({ example: "tmobile", description: "only a modem on this carrier" }),
});

async function handle(c: Context<AppEnv>): Promise<Response> {
  const deps = c.get("deps");
  const rails = await requireRails(c);
  const pricing = await requireDedicatedPricing(c);
  const parsed = parseDedicatedOrder(c.req.query(), pricing);
  if (!parsed.ok) throw fieldError(parsed.field, parsed.message);
  const { order } = parsed;
  const resource = dedicatedResource(originOf(c), order);

  const proof = requestProof(c);
  if (proof === null) {
    const availability = countFree(await listFreeModems(deps));
    // Only invite a payment we can serve right now (it can still be taken before the agent pays).
    if (freeFor(availability, order) === 0) throw noFreeModem(order, availability);
    return paymentRequired(c, {
      rails,
      resource,
      description: `a dedicated production modem (${order.country}${order.carrier ? `, ${order.carrier}` : ""}) for ${order.days} days`,
      priceMicro: order.priceMicro,
      extra: {
        order: {
          country: order.country,
          carrier: order.carrier ?? null,
          durationDays: order.days,
          includedGB: formatGb(order.includedBytes),
          priceMicroUsdc: order.priceMicro.toString(),
        },
        catalog: dedicatedCatalog(pricing),
        availability,
        howToPay: HOW_TO_PAY,
      },
    });
  }

  const outcome = await purchase({
    ctx: paidContext(c, rails),
    product: "proxy",
    proof,
    order: {
      productKey: dedicatedProductKey(order),
      priceMicro: order.priceMicro,
      resource,
      // An EIP-3009 authorization moves money only when we settle it: not while nothing is free.
      async canServe() {
        const availability = countFree(await listFreeModems(deps));
        return freeFor(availability, order) === 0
          ? { kind: "product_refused", reason: "no_free_modem", consumptionKey: null, resumeToken: null }
          : null;
      },
      redeem: ({ payment, sessionToken, mintToken }) =>
        redeemDedicatedPurchase(
          { pool: deps.db, redis: deps.redis, now: deps.now },
          {
            houseAccountId: rails.houseAccountId,
            payment,
            order,
            sessionToken,
            ...(mintToken ? { mintToken } : {}),
          },
        ),
    },
  });
  if (!outcome.ok) {
    const { refusal } = outcome;
    if (refusal.kind === "product_refused")
      throw noFreeModem(
        order,
        countFree(await listFreeModems(deps)),
        refusal.consumptionKey
          ? { consumptionKey: refusal.consumptionKey, resumeToken: refusal.resumeToken }
          : undefined,
      );
    throw refusalError(refusal, `${MANAGE_PROXY}/connection`);
  }
  const { payment, access: result } = outcome;
  const used = await usedOf(c, result.credential.id);
  const access = dedicatedAccessBody(c, {
    ...result,
    reservation: await reservationOfCredential(deps.db, result.credential.id),
    usedBytes: used,
    pricing,
  });
  return purchaseAnswer(c, payment, result, access);
}

export function registerX402Proxy(app: OpenAPIHono<AppEnv>) {
  registerPurchaseRoute(
    app,
    {
      path: "/v1/x402/proxy",
      summary:
        "Rent a dedicated production modem with USDC: without payment the 402 is the price sheet; with payment, credentials pinned to the modem",
      query: ProxyQuery,
      access: {
        description: "Modem reserved and credentials minted (or re-emitted to their proven owner)",
        schema: DedicatedAccess,
      },
      quoteDescription:
        "Payment required: x402 v1 body plus catalog and free modems per country; x402 v2 object in the PAYMENT-REQUIRED header",
      errors: {
        503: errorResponse(
          "E_NO_FREE_MODEM (no modem free for the order; a presented payment was not consumed), E_PAYMENT_PENDING (retry with the same proof) or E_UNAVAILABLE",
        ),
      },
    },
    handle,
  );
}
