// A purpose-built misbehaving peer for prober tests: a real WebSocket client speaking PROTOCOL.md
// section 2 (binary-v1, no flow-v1) to a real relay, with a fault switch that can be flipped while
// it is connected. It is not the SDK; it exists to misbehave on demand. Loopback targets only.
import { connect, type Socket } from "node:net";
import { WebSocket } from "ws";
import { decodeFrame, encodeFrame, FRAME_CLOSE, FRAME_DATA } from "../../shared/frame.ts";
import { control, receiveFromRelay } from "../../shared/messages.ts";

/**
 * good: dials the target and pipes bytes both ways.
 * drop_on_client_hello: accepts the tunnel, then closes it as soon as the first customer bytes
 *   (the TLS ClientHello) arrive; a plain HTTP-forward probe to another host would still pass.
 * blackhole: accepts the tunnel and silently swallows everything the customer sends.
 * stall_after_kib: forwards the target's first `stallAfterBytes` bytes, then nothing (tunnel stays up).
 */
export type PeerFault = "good" | "drop_on_client_hello" | "blackhole" | "stall_after_kib";

export interface FaultPeer {
  fault: PeerFault;
  stallAfterBytes: number;
  /** tunnels the relay asked this peer to open */
  tunnelsOpened: number;
  close(): Promise<void>;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

export function startFaultPeer(opts: {
  url: string;
  token: string;
  fault?: PeerFault;
  stallAfterBytes?: number;
}): Promise<FaultPeer> {
  const ws = new WebSocket(opts.url, [`token.${opts.token}`], { perMessageDeflate: false });
  const sessions = new Map<string, { sock: Socket; sentDown: number; gotUp: boolean; stalled: boolean }>();
  const send = (data: string | Uint8Array) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  };
  const closeSession = (sessionId: string) => {
    const s = sessions.get(sessionId);
    if (!s) return;
    sessions.delete(sessionId);
    s.sock.destroy();
    send(control("tunnel_closed", { sessionId }));
  };

  const peer: FaultPeer = {
    fault: opts.fault ?? "good",
    stallAfterBytes: opts.stallAfterBytes ?? 8 * 1024,
    tunnelsOpened: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions.values()) s.sock.destroy();
        if (ws.readyState === WebSocket.CLOSED) resolve();
        else {
          ws.once("close", () => resolve());
          ws.close(1000);
        }
      }),
  };

  const dial = (sessionId: string, host: string, port: number) => {
    peer.tunnelsOpened++;
    if (!LOOPBACK.has(host)) {
      send(
        control("tunnel_open_failed", {
          sessionId,
          reason: "blocked_target",
          detail: "fault peer: loopback only",
        }),
      );
      return;
    }
    const sock = connect({ host, port });
    const s = { sock, sentDown: 0, gotUp: false, stalled: false };
    sessions.set(sessionId, s);
    sock.on("connect", () => send(control("tunnel_connected", { sessionId })));
    sock.on("data", (chunk: Buffer) => {
      if (peer.fault === "stall_after_kib") {
        const room = peer.stallAfterBytes - s.sentDown;
        if (room <= 0) {
          // Stop reading too, so the target cannot finish and close: the tunnel stays up, silent.
          s.stalled = true;
          sock.pause();
          return;
        }
        chunk = chunk.subarray(0, room);
      }
      s.sentDown += chunk.length;
      send(encodeFrame(FRAME_DATA, sessionId, chunk));
    });
    sock.on("error", (err: NodeJS.ErrnoException) => {
      if (sessions.get(sessionId) === s && !sock.remoteAddress) {
        sessions.delete(sessionId);
        send(
          control("tunnel_open_failed", {
            sessionId,
            reason: err.code === "ECONNREFUSED" ? "connection_refused" : "unknown",
            detail: err.message,
          }),
        );
      }
    });
    sock.on("close", () => {
      if (sessions.get(sessionId) === s && !s.stalled) closeSession(sessionId);
    });
  };

  const fromRelay = (sessionId: string, bytes: Uint8Array) => {
    const s = sessions.get(sessionId);
    if (!s) return;
    if (peer.fault === "blackhole") return;
    // 0x16 0x03 = a TLS handshake record: the fault is TLS-specific, like DPI that kills TLS only.
    if (peer.fault === "drop_on_client_hello" && !s.gotUp && bytes[0] === 0x16 && bytes[1] === 0x03) {
      closeSession(sessionId);
      return;
    }
    s.gotUp = true;
    s.sock.write(bytes);
  };

  ws.on("message", (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
    if (isBinary) {
      const d = decodeFrame(buf);
      if (!d.ok) return;
      if (d.frame.type === FRAME_DATA) fromRelay(d.frame.sessionId, d.frame.payload);
      else if (d.frame.type === FRAME_CLOSE) sessions.get(d.frame.sessionId)?.sock.destroy();
      return;
    }
    const received = receiveFromRelay(buf.toString("utf8"));
    if (received.kind !== "known") return;
    const msg = received.msg;
    if (msg.type === "tunnel_connect") dial(msg.payload.sessionId, msg.payload.host, msg.payload.port);
    else if (msg.type === "tunnel_close") {
      const s = sessions.get(msg.payload.sessionId);
      sessions.delete(msg.payload.sessionId);
      s?.sock.destroy();
    }
  });
  ws.on("error", () => {});

  return new Promise((resolve, reject) => {
    ws.once("open", () => {
      send(
        control("device_info", {
          country: "US",
          carrier: "test",
          currentIp: "auto",
          protocol: "binary-v1",
          supportsRelayRedirect: false,
          sdkVersion: "fault-peer/1",
        }),
      );
      resolve(peer);
    });
    ws.once("unexpected-response", (_req, res) => reject(new Error(`fault peer: HTTP ${res.statusCode}`)));
    ws.once("error", reject);
  });
}
