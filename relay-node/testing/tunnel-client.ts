// The gateway's side of POST /tunnel (docs/internal.md), for relay tests: a raw TCP client that
// sends the upgrade request and hands back the socket once the relay answers 101.
import { connect, type Socket } from "node:net";

/**
 * Statuses other than 101 that the relay's contract defines (0 = no parseable status line). A
 * literal union rather than `number` so `if (r.status !== 101)` narrows, as callers write it.
 */
export type RefusedStatus = 0 | 200 | 400 | 401 | 403 | 404 | 426 | 500 | 502 | 503 | 504;

export type TunnelResult =
  | { ok: true; status: 101; socket: Socket; early: Buffer }
  | { ok: false; status: RefusedStatus; body: Record<string, unknown>; text: string };

export function requestTunnel(opts: {
  internalUrl: string;
  secret: string;
  deviceId: string;
  target: string;
  upgrade?: string;
}): Promise<TunnelResult> {
  const url = new URL(opts.internalUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port) });
    let buf = Buffer.alloc(0);
    let headerDone = false;
    let status = 0;
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (headerDone) return;
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      headerDone = true;
      status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf.subarray(0, end).toString("latin1"))?.[1] ?? 0);
      if (status === 101) {
        socket.off("data", onData);
        socket.pause();
        resolve({ ok: true, status: 101, socket, early: buf.subarray(end + 4) });
        return;
      }
      buf = buf.subarray(end + 4);
    };
    socket.on("data", onData);
    socket.on("error", reject);
    socket.on("end", () => {
      if (status === 101) return;
      const text = buf.toString("utf8");
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {}
      resolve({ ok: false, status: status as RefusedStatus, body, text });
      socket.destroy();
    });
    socket.write(
      "POST /tunnel HTTP/1.1\r\n" +
        `Host: ${url.host}\r\n` +
        `Authorization: Bearer ${opts.secret}\r\n` +
        `X-Device-Id: ${opts.deviceId}\r\n` +
        `X-Target: ${opts.target}\r\n` +
        "Connection: Upgrade\r\n" +
        `Upgrade: ${opts.upgrade ?? "peerproxy-tunnel/1"}\r\n` +
        "Content-Length: 0\r\n\r\n",
    );
  });
}
