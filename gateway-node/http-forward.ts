/**
 * Absolute-URI forwarding mode (`GET http://host/path`): each request gets its own metered tunnel
 * through an exit, while the customer's connection to us stays keep-alive.
 */
import { type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { duplexPair } from "node:stream";
import { basicCredentials } from "./auth.ts";
import { asGatewayError, GatewayError, httpError } from "./errors.ts";
import { loginAndOpen } from "./login.ts";
import { countError, requestIdFrom } from "./requests.ts";
import type { GatewayContext, Tunnel } from "./tunnel.ts";

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-authenticate",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
]);

function endToEnd(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

export async function handleForward(
  ctx: GatewayContext,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const requestId = requestIdFrom(req.headers["x-request-id"]);
  let tunnel: Tunnel | undefined;
  const fail = (err: unknown) => {
    const g = asGatewayError(err);
    countError(ctx, g, err, requestId);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const { status, headers, body } = httpError(g, requestId);
    res.writeHead(status, headers).end(body);
  };
  try {
    let url: URL | undefined;
    try {
      url = new URL(req.url ?? "");
    } catch {}
    if (url?.protocol !== "http:")
      throw new GatewayError("E_TARGET_UNREACHABLE", "send an absolute http:// URI, or CONNECT for https");
    const t = await loginAndOpen(
      ctx,
      {
        credentials: basicCredentials(req.headers["proxy-authorization"]),
        clientIp: req.socket.remoteAddress ?? "",
        socket: req.socket,
      },
      { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 80) },
      requestId,
    );
    tunnel = t;
    // The HTTP client gets one end of an in-memory pair; the metered splice joins the other end to
    // the exit, so a dry byte budget really stops the exit (the client would resume a raw socket).
    const [clientSide, tunnelSide] = duplexPair();
    t.splice(tunnelSide);
    t.exit.once("close", () => clientSide.destroy());
    res.on("close", () => void t.close());
    const upstream = request({
      createConnection: () => clientSide as unknown as Socket,
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers: { ...endToEnd(req.headers), connection: "close" },
    });
    upstream.on("response", (up) => {
      const headers = endToEnd(up.headers);
      headers["x-request-id"] = requestId;
      res.writeHead(up.statusCode ?? 502, headers);
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", () =>
      fail(
        new GatewayError("E_TARGET_UNREACHABLE", "the target closed the connection", {
          proxyStatus: "connection_terminated",
        }),
      ),
    );
    req.pipe(upstream);
  } catch (err) {
    if (tunnel) void tunnel.close();
    fail(err);
  }
}
