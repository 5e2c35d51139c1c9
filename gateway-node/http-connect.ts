/** HTTP CONNECT mode: `CONNECT host:port` -> authenticated, metered raw tunnel through an exit. */
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { basicCredentials } from "./auth.ts";
import { asGatewayError, GatewayError, rawHttpError } from "./errors.ts";
import type { Target } from "./exits.ts";
import { loginAndOpen } from "./login.ts";
import { countError, requestIdFrom } from "./requests.ts";
import type { GatewayContext } from "./tunnel.ts";

/** `host:port` or `[v6]:port` from a CONNECT request line. */
export function parseAuthority(authority: string): Target | undefined {
  const m =
    /^\[([0-9a-fA-F:.]+(?:%[0-9A-Za-z._~-]+)?)\]:(\d{1,5})$/.exec(authority) ??
    /^([^:[\]\s/]+):(\d{1,5})$/.exec(authority);
  if (!m?.[1] || !m[2]) return undefined;
  return { host: m[1], port: Number(m[2]) };
}

export async function handleConnect(
  ctx: GatewayContext,
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
): Promise<void> {
  const requestId = requestIdFrom(req.headers["x-request-id"]);
  socket.on("error", () => {});
  try {
    const target = parseAuthority(req.url ?? "");
    if (!target) throw new GatewayError("E_TARGET_UNREACHABLE", "CONNECT needs host:port");
    const tunnel = await loginAndOpen(
      ctx,
      {
        credentials: basicCredentials(req.headers["proxy-authorization"]),
        clientIp: socket.remoteAddress ?? "",
        socket,
      },
      target,
      requestId,
    );
    if (socket.destroyed) {
      await tunnel.close();
      return;
    }
    socket.write(`HTTP/1.1 200 Connection Established\r\nX-Request-ID: ${requestId}\r\n\r\n`);
    tunnel.splice(socket, head);
  } catch (err) {
    const g = asGatewayError(err);
    countError(ctx, g, err, requestId);
    if (!socket.destroyed) socket.end(rawHttpError(g, requestId));
  }
}
