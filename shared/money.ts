/** Money is integer micro-USDC (1 USDC = 1_000_000) as bigint. Never floats. */

export const MICRO_PER_USDC = 1_000_000n;
/** Traffic is priced and paid in decimal gigabytes (10^9 bytes), like every per-GB sheet in the field. */
export const BYTES_PER_GB = 1_000_000_000n;
const DECIMAL = /^(0|[1-9]\d*)(?:\.(\d{1,6}))?$/;

/** Parses a decimal USDC string ("4", "0.25") into micro-USDC; rejects more than 6 decimals. */
export function parseUsdc(text: string): bigint {
  const m = DECIMAL.exec(text.trim());
  if (!m) throw new RangeError(`not a USDC amount with at most 6 decimals: ${JSON.stringify(text)}`);
  const whole = BigInt(m[1]!);
  const frac = BigInt((m[2] ?? "").padEnd(6, "0"));
  return whole * MICRO_PER_USDC + frac;
}

/** Formats micro-USDC as a decimal string without trailing zeros ("4", "0.25"). */
export function formatUsdc(micro: bigint): string {
  const sign = micro < 0n ? "-" : "";
  const abs = micro < 0n ? -micro : micro;
  const whole = abs / MICRO_PER_USDC;
  const frac = (abs % MICRO_PER_USDC).toString().padStart(6, "0").replace(/0+$/, "");
  return frac ? `${sign}${whole}.${frac}` : `${sign}${whole}`;
}

/** Parses a strict non-negative integer string (e.g. micro-USDC from a chain or a 402) into bigint. */
export function parseIntegerAmount(text: string): bigint {
  if (!/^(0|[1-9]\d*)$/.test(text))
    throw new RangeError(`not a non-negative integer: ${JSON.stringify(text)}`);
  return BigInt(text);
}
