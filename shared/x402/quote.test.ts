import { describe, expect, it } from "vitest";
import { BASE_USDC_ADDRESS, BASE_USDC_EIP712, SOLANA_USDC_MINT } from "./networks.ts";
import {
  buildPaymentRequiredV1,
  buildPaymentRequiredV2,
  coversPrice,
  decodeBase64Json,
  encodePaymentRequiredHeader,
  parseTrafficBytes,
  quotePurchase,
} from "./quote.ts";

const FOUR_USDC = 4_000_000n;

function quote(traffic: string, durationDays?: string) {
  return quotePurchase({ pricePerGbMicro: FOUR_USDC, traffic, durationDays });
}

describe("quotePurchase: integer micro-USDC from decimal GB text", () => {
  it('"0.1" GB at $4/GB is exactly 400000 micro-USDC and 10^8 bytes, 30 days by default', () => {
    expect(quote("0.1")).toEqual({
      ok: true,
      quote: { trafficBytes: 100_000_000n, trafficGb: "0.1", priceMicro: 400_000n, durationDays: 30 },
    });
  });

  it('"0.5" GB and "12.25" GB price exactly; trailing zeros normalise', () => {
    expect(quote("0.5")).toMatchObject({
      ok: true,
      quote: { trafficBytes: 500_000_000n, priceMicro: 2_000_000n },
    });
    expect(quote("12.250")).toMatchObject({
      ok: true,
      quote: { trafficGb: "12.25", priceMicro: 49_000_000n },
    });
  });

  it("a price that is not a whole micro-USDC rounds up, never down", () => {
    // 0.123456789 GB * 4 USDC = 0.493827156 USDC -> 493828 micro-USDC.
    expect(quote("0.123456789")).toMatchObject({ ok: true, quote: { priceMicro: 493_828n } });
  });

  it('"0.05" GB is under the 0.1 GB minimum and names the traffic field', () => {
    expect(quote("0.05")).toMatchObject({ ok: false, field: "traffic" });
    expect(quote("0.099999999")).toMatchObject({ ok: false, field: "traffic" });
  });

  it("malformed traffic numbers are refused naming the field, never coerced", () => {
    for (const bad of [
      "",
      "abc",
      "1e3",
      "-1",
      "0x10",
      ".5",
      "1.",
      "1.0000000001",
      "01",
      "Infinity",
      "NaN",
      " 1 2",
    ])
      expect(quote(bad), bad).toMatchObject({ ok: false, field: "traffic" });
    expect(parseTrafficBytes(" 2 ")).toBe(2_000_000_000n);
  });

  it("duration is whole days from 1 to 90; anything else names the duration field", () => {
    expect(quote("1", "90")).toMatchObject({ ok: true, quote: { durationDays: 90 } });
    expect(quote("1", "1")).toMatchObject({ ok: true, quote: { durationDays: 1 } });
    for (const bad of ["0", "91", "1.5", "-3", "", "30d", "090"])
      expect(quote("1", bad), bad).toMatchObject({ ok: false, field: "duration" });
  });
});

describe("coversPrice: 2% underpayment tolerance in integer math", () => {
  it("exactly 98% of the price passes and one micro-USDC less fails", () => {
    expect(coversPrice(392_000n, 400_000n)).toBe(true);
    expect(coversPrice(391_999n, 400_000n)).toBe(false);
    expect(coversPrice(400_000n, 400_000n)).toBe(true);
    expect(coversPrice(10n ** 30n, 400_000n)).toBe(true);
  });

  it("on prices where 98% is fractional the boundary rounds against the payer", () => {
    // 98% of 333 = 326.34: 327 covers it, 326 does not.
    expect(coversPrice(327n, 333n)).toBe(true);
    expect(coversPrice(326n, 333n)).toBe(false);
  });
});

describe("402 price sheet builders", () => {
  const sheet = {
    resource: "http://127.0.0.1:8787/v1/x402/pool?tier=mbl&country=us&traffic=0.1",
    description: "0.1 GB of mbl pool traffic, 30 days",
    priceMicro: 400_000n,
    options: [
      {
        network: "base",
        payTo: "0x000000000000000000000000000000000000dEaD",
        asset: BASE_USDC_ADDRESS,
        extra: BASE_USDC_EIP712,
      },
      { network: "solana", payTo: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", asset: SOLANA_USDC_MINT },
    ] as const,
  };

  it("v1 carries the integer amount as a string on both networks", () => {
    const body = buildPaymentRequiredV1(sheet);
    expect(body.x402Version).toBe(1);
    expect(body.accepts.map((a) => [a.network, a.maxAmountRequired, a.scheme])).toEqual([
      ["base", "400000", "exact"],
      ["solana", "400000", "exact"],
    ]);
  });

  it("the v2 header is standard base64 of JSON with CAIP-2 networks and round-trips", () => {
    const header = encodePaymentRequiredHeader(buildPaymentRequiredV2(sheet));
    expect(header).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
    const decoded = decodeBase64Json(header) as ReturnType<typeof buildPaymentRequiredV2>;
    expect(decoded.accepts.map((a) => a.network)).toEqual([
      "eip155:8453",
      "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
    ]);
    expect(decoded.accepts[0]).toMatchObject({ amount: "400000", extra: { name: "USD Coin", version: "2" } });
    expect(decoded.resource.url).toBe(sheet.resource);
  });
});
