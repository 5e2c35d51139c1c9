// Prices a pool purchase and builds the x402 price sheet (v1 body, v2 PAYMENT-REQUIRED header).
// Everything is integer math on bigint: traffic is parsed from its decimal text, never via Number.
import { BYTES_PER_GB } from "../money.ts";
import { CAIP2, type PaymentNetwork } from "./networks.ts";

export { BYTES_PER_GB };
export const MIN_TRAFFIC_BYTES = 100_000_000n; // 0.1 GB
export const MAX_TRAFFIC_BYTES = 10_000n * BYTES_PER_GB; // a sanity ceiling, not a product limit
export const DEFAULT_DURATION_DAYS = 30;
export const MAX_DURATION_DAYS = 90;
/** Underpayment tolerance in percent (wallet rounding, fee-on-transfer quirks): paid*100 >= price*98. */
export const UNDERPAYMENT_TOLERANCE_PERCENT = 2n;

export interface QuoteInput {
  /** Price per GB in micro-USDC, from settings (never a constant in code). */
  pricePerGbMicro: bigint;
  /** Traffic in GB as the customer typed it ("0.5", "1", "12.25"); at most 9 decimals (bytes). */
  traffic: string;
  /** Duration in whole days as text (a query parameter); absent means the default. */
  durationDays?: string | undefined;
}

export interface Quote {
  trafficBytes: bigint;
  /** Canonical decimal GB text of trafficBytes ("0.5"), for descriptions and the credential. */
  trafficGb: string;
  /** Exact price in micro-USDC, rounded up to the next micro-USDC so we never undercharge. */
  priceMicro: bigint;
  durationDays: number;
}

export type QuoteResult =
  | { ok: true; quote: Quote }
  | { ok: false; field: "traffic" | "duration"; message: string };

const GB_DECIMAL = /^(0|[1-9]\d{0,12})(?:\.(\d{1,9}))?$/;
const DAYS = /^[1-9]\d{0,2}$/;

/** Parses decimal GB text into bytes exactly; null when it is not a plain decimal. */
export function parseTrafficBytes(text: string): bigint | null {
  const m = GB_DECIMAL.exec(text.trim());
  if (!m) return null;
  const whole = BigInt(m[1]!);
  const frac = BigInt((m[2] ?? "").padEnd(9, "0"));
  return whole * BYTES_PER_GB + frac;
}

/** Formats bytes as decimal GB without trailing zeros. */
export function formatGb(bytes: bigint): string {
  const whole = bytes / BYTES_PER_GB;
  const frac = (bytes % BYTES_PER_GB).toString().padStart(9, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}

/** Price of `bytes` at `pricePerGbMicro`, rounded up to a whole micro-USDC. */
export function priceForBytes(pricePerGbMicro: bigint, bytes: bigint): bigint {
  return (pricePerGbMicro * bytes + BYTES_PER_GB - 1n) / BYTES_PER_GB;
}

/** True when `paid` covers `price` within the 2% tolerance, compared as integers. */
export function coversPrice(paid: bigint, price: bigint): boolean {
  return paid * 100n >= price * (100n - UNDERPAYMENT_TOLERANCE_PERCENT);
}

/** Prices a purchase; every refusal names the field the customer must fix. */
export function quotePurchase(input: QuoteInput): QuoteResult {
  if (input.pricePerGbMicro <= 0n) throw new RangeError("pricePerGbMicro must be positive");
  const trafficBytes = parseTrafficBytes(input.traffic);
  if (trafficBytes === null)
    return {
      ok: false,
      field: "traffic",
      message: `traffic must be a decimal number of GB with at most 9 decimals, got ${JSON.stringify(input.traffic)}`,
    };
  if (trafficBytes < MIN_TRAFFIC_BYTES)
    return {
      ok: false,
      field: "traffic",
      message: `traffic must be at least ${formatGb(MIN_TRAFFIC_BYTES)} GB`,
    };
  if (trafficBytes > MAX_TRAFFIC_BYTES)
    return {
      ok: false,
      field: "traffic",
      message: `traffic must be at most ${formatGb(MAX_TRAFFIC_BYTES)} GB`,
    };

  let durationDays = DEFAULT_DURATION_DAYS;
  if (input.durationDays !== undefined) {
    const text = input.durationDays.trim();
    const days = DAYS.test(text) ? Number(text) : Number.NaN;
    if (!(days >= 1 && days <= MAX_DURATION_DAYS))
      return {
        ok: false,
        field: "duration",
        message: `duration must be a whole number of days from 1 to ${MAX_DURATION_DAYS}, got ${JSON.stringify(input.durationDays)}`,
      };
    durationDays = days;
  }
  return {
    ok: true,
    quote: {
      trafficBytes,
      trafficGb: formatGb(trafficBytes),
      priceMicro: priceForBytes(input.pricePerGbMicro, trafficBytes),
      durationDays,
    },
  };
}

/** One way to pay: a network with its pinned recipient and asset. */
export interface PaymentOption {
  network: PaymentNetwork;
  payTo: string;
  asset: string;
  /** Scheme-specific data; for Base USDC the EIP-712 domain {name, version} EIP-3009 signers need. */
  extra?: Record<string, unknown>;
}

export interface PriceSheetInput {
  /** Absolute URL of the resource being bought (x402 clients require a URL). */
  resource: string;
  description: string;
  priceMicro: bigint;
  options: readonly PaymentOption[];
  error?: string;
  mimeType?: string;
  maxTimeoutSeconds?: number;
}

export interface PaymentRequirementsV1 {
  scheme: "exact";
  network: PaymentNetwork;
  maxAmountRequired: string;
  asset: string;
  payTo: string;
  resource: string;
  description: string;
  mimeType: string;
  maxTimeoutSeconds: number;
  extra: Record<string, unknown>;
}

export interface PaymentRequiredV1 {
  x402Version: 1;
  error: string;
  accepts: PaymentRequirementsV1[];
}

export interface PaymentRequirementsV2 {
  scheme: "exact";
  network: string;
  amount: string;
  asset: string;
  payTo: string;
  maxTimeoutSeconds: number;
  extra: Record<string, unknown>;
}

export interface PaymentRequiredV2 {
  x402Version: 2;
  error: string;
  resource: { url: string; description: string; mimeType: string };
  accepts: PaymentRequirementsV2[];
}

const DEFAULT_ERROR = "payment required";
const DEFAULT_MIME = "application/json";
// Long enough for a Base transfer plus confirmations and an agent's retry loop.
const DEFAULT_TIMEOUT_SECONDS = 600;

/** The x402 v1 402 body: amounts are integer micro-USDC strings. */
export function buildPaymentRequiredV1(input: PriceSheetInput): PaymentRequiredV1 {
  return {
    x402Version: 1,
    error: input.error ?? DEFAULT_ERROR,
    accepts: input.options.map((option) => ({
      scheme: "exact",
      network: option.network,
      maxAmountRequired: input.priceMicro.toString(),
      asset: option.asset,
      payTo: option.payTo,
      resource: input.resource,
      description: input.description,
      mimeType: input.mimeType ?? DEFAULT_MIME,
      maxTimeoutSeconds: input.maxTimeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
      extra: option.extra ?? {},
    })),
  };
}

/** The x402 v2 object carried (base64) in the PAYMENT-REQUIRED header, with CAIP-2 networks. */
export function buildPaymentRequiredV2(input: PriceSheetInput): PaymentRequiredV2 {
  return {
    x402Version: 2,
    error: input.error ?? DEFAULT_ERROR,
    resource: {
      url: input.resource,
      description: input.description,
      mimeType: input.mimeType ?? DEFAULT_MIME,
    },
    accepts: input.options.map((option) => ({
      scheme: "exact",
      network: CAIP2[option.network],
      amount: input.priceMicro.toString(),
      asset: option.asset,
      payTo: option.payTo,
      maxTimeoutSeconds: input.maxTimeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
      extra: option.extra ?? {},
    })),
  };
}

/** Standard base64 (not base64url) of UTF-8 JSON, as x402 headers are encoded. Runs in Workers. */
export function encodeBase64Json(value: unknown): string {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Decodes a standard-base64 JSON header; null when it is not base64 or not JSON. */
export function decodeBase64Json(text: string): unknown {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text.trim())) return null;
  try {
    const binary = atob(text.trim());
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** The header value for PAYMENT-REQUIRED. */
export function encodePaymentRequiredHeader(sheet: PaymentRequiredV2): string {
  return encodeBase64Json(sheet);
}
