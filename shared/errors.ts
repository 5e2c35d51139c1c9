/** One error shape everywhere: {error: {code, message, requestId, docs}}; one code -> status table. */

export const API_ERRORS = {
  E_BAD_REQUEST: 400,
  E_VALIDATION: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_DEVICE_LIMIT: 403,
  E_UNPROVEN_LIMIT: 403,
  E_NOT_FOUND: 404,
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
