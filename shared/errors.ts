/** One error shape everywhere: {error: {code, message, requestId, docs}}; one code -> status table. */

export const API_ERRORS = {
  E_BAD_REQUEST: 400,
  E_VALIDATION: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_DEVICE_LIMIT: 403,
  E_UNPROVEN_LIMIT: 403,
  /** the API key is valid but lacks the scope this route needs; details.requiredScope names it */
  E_SCOPE_REQUIRED: 403,
  /** a pool-key write would exceed what the account may resell (bytes or connections per key) */
  E_RESELL_LIMIT: 403,
  E_NOT_FOUND: 404,
  /** the path exists but not for this method; the Allow header lists the ones it serves */
  E_METHOD_NOT_ALLOWED: 405,
  E_CONFLICT: 409,
  E_IDEMPOTENCY_MISMATCH: 409,
  E_PAYMENT_REQUIRED: 402,
  /** x402: the payment was checked on-chain and does not pay for this (final; details.reason says why). */
  E_PAYMENT_INVALID: 402,
  /** x402: this payment already bought something (another product, or re-emission needs proof). */
  E_PAYMENT_USED: 409,
  /** x402: the payment is not final yet; nothing was consumed, retry with the same proof. */
  E_PAYMENT_PENDING: 503,
  /** x402 dedicated port: no modem is free for that order now; a presented payment was not consumed. */
  E_NO_FREE_MODEM: 503,
  /** x402 dedicated port: this modem cannot rotate on demand (its operator configured no rotation webhook). */
  E_ROTATION_UNAVAILABLE: 501,
  /** a withdrawal below the minimum for the account's supply kind; details.minimumMicro names it */
  E_BELOW_MINIMUM: 422,
  /** the payout wallet is in its cooling period; details.payableFrom is when it pays */
  E_WALLET_COOLING: 409,
  /** no payout wallet is registered (PUT /v1/peer/wallet) */
  E_WALLET_REQUIRED: 409,
  /** the amount exceeds the available balance; details.availableMicro says how much there is */
  E_INSUFFICIENT_BALANCE: 409,
  E_RATE_LIMITED: 429,
  E_INTERNAL: 500,
  E_CONFIG: 503,
  E_UNAVAILABLE: 503,
} as const;

export type ApiErrorCode = keyof typeof API_ERRORS;

export interface ApiErrorBody {
  error: { code: ApiErrorCode; message: string; requestId: string; docs: string; details?: unknown };
}

/** Thrown only at the HTTP edge; services return results for expected failures. */
export class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly details?: unknown;
  readonly headers?: Record<string, string>;
  constructor(
    code: ApiErrorCode,
    message: string,
    opts: { details?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.code = code;
    this.status = API_ERRORS[code];
    this.details = opts.details;
    this.headers = opts.headers;
  }
}

export const ERROR_DOCS_BASE = "https://github.com/peerproxy/peerproxy/blob/main/docs/errors.md";

export function errorBody(
  code: ApiErrorCode,
  message: string,
  requestId: string,
  details?: unknown,
): ApiErrorBody {
  return {
    error: {
      code,
      message,
      requestId,
      docs: `${ERROR_DOCS_BASE}#${code.toLowerCase()}`,
      ...(details === undefined ? {} : { details }),
    },
  };
}
