/**
 * The gateway's error table (PROTOCOL.md section 3): one code -> HTTP status, RFC 9209
 * Proxy-Status error type and the closest SOCKS5 REP code (RFC 1928 section 6).
 */

export const GATEWAY_ERRORS = {
  E_AUTH_REQUIRED: { status: 407, proxyStatus: "http_request_denied", socksRep: 0x02 },
  E_AUTH_INVALID: { status: 407, proxyStatus: "http_request_denied", socksRep: 0x02 },
  E_CAP_EXCEEDED: { status: 402, proxyStatus: "http_request_denied", socksRep: 0x02 },
  E_CREDENTIAL_SUSPENDED: { status: 403, proxyStatus: "http_request_denied", socksRep: 0x02 },
  E_USERNAME_PARSE: { status: 400, proxyStatus: "http_request_error", socksRep: 0x02 },
  E_RATE_LIMITED: { status: 429, proxyStatus: "http_request_denied", socksRep: 0x02 },
  E_NO_STOCK: { status: 502, proxyStatus: "destination_unavailable", socksRep: 0x03 },
  E_NO_CAPACITY: { status: 503, proxyStatus: "connection_limit_reached", socksRep: 0x01 },
  E_SESSION_PEER_GONE: { status: 502, proxyStatus: "destination_unavailable", socksRep: 0x03 },
  E_TARGET_UNREACHABLE: { status: 502, proxyStatus: "destination_unavailable", socksRep: 0x04 },
  E_TARGET_BLOCKED: { status: 403, proxyStatus: "destination_ip_prohibited", socksRep: 0x02 },
  E_INTERNAL: { status: 503, proxyStatus: "proxy_internal_error", socksRep: 0x01 },
} as const;

export type GatewayErrorCode = keyof typeof GATEWAY_ERRORS;

const REASONS: Record<number, string> = {
  400: "Bad Request",
  402: "Payment Required",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  429: "Too Many Requests",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

export const PROXY_NAME = "peerproxy";
export const AUTH_REALM = 'Basic realm="peerproxy"';

/** An expected failure with its wire code; services return these, the edges render them. */
export class GatewayError extends Error {
  readonly code: GatewayErrorCode;
  /** a more precise RFC 9209 error type than the table's default (e.g. connection_refused) */
  readonly proxyStatus: string;
  readonly socksRep: number;
  /** seconds for a Retry-After header (E_NO_CAPACITY) */
  readonly retryAfterS: number | undefined;
  constructor(
    code: GatewayErrorCode,
    message: string,
    opts: { proxyStatus?: string; socksRep?: number; retryAfterS?: number } = {},
  ) {
    super(message);
    this.name = "GatewayError";
    this.code = code;
    this.proxyStatus = opts.proxyStatus ?? GATEWAY_ERRORS[code].proxyStatus;
    this.socksRep = opts.socksRep ?? GATEWAY_ERRORS[code].socksRep;
    this.retryAfterS = opts.retryAfterS;
  }
  get status(): number {
    return GATEWAY_ERRORS[this.code].status;
  }
}

export function newRequestId(): string {
  return `req_${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
}

/** Headers and body for an HTTP error answer: `CODE: message (req: <id>)`. */
export function httpError(
  err: GatewayError,
  requestId: string,
): { status: number; headers: Record<string, string>; body: string } {
  const body = `${err.code}: ${err.message} (req: ${requestId})\n`;
  const headers: Record<string, string> = {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(body)),
    "X-Request-ID": requestId,
    "Proxy-Status": `${PROXY_NAME}; error=${err.proxyStatus}; details="${err.code}"`,
  };
  if (err.status === 407) headers["Proxy-Authenticate"] = AUTH_REALM;
  if (err.retryAfterS !== undefined) headers["Retry-After"] = String(err.retryAfterS);
  return { status: err.status, headers, body };
}

/** The raw HTTP/1.1 bytes of an error answer, for sockets taken over by CONNECT. */
export function rawHttpError(err: GatewayError, requestId: string): string {
  const { status, headers, body } = httpError(err, requestId);
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  lines.push("Connection: close");
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

/** Whatever was thrown, as a GatewayError (unexpected ones become E_INTERNAL, never leaked). */
export function asGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError("E_INTERNAL", "internal error");
}
