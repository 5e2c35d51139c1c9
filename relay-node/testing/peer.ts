// A small protocol client for relay tests: a real WebSocket peer that speaks PROTOCOL.md section 2
// (binary-v1 or legacy JSON/base64, optionally flow-v1) and dials loopback targets only. It is
// not the SDK (peer-node/ is): it exists so relay tests can drive every protocol variant.
import { connect, type Socket } from "node:net";
import { WebSocket } from "ws";
import {
  decodeFrame,
  encodeFrame,
  encodeWindow,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  INITIAL_WINDOW,
  windowCredit,
} from "../../shared/frame.ts";
import {
  type ControlPayload,
  type PeerToRelay,
  type RelayToPeer,
  receiveFromRelay,
} from "../../shared/messages.ts";

export interface TestPeerOptions {
  url: string;
  /** Sent as the `token.<jwt>` subprotocol; omit to connect without one. */
  token?: string;
  /** Extra subprotocols offered before the token (or instead of it). */
  protocols?: string[];
  mode?: "binary" | "legacy";
  flow?: boolean;
  supportsRelayRedirect?: boolean;
  /** Send device_info after open (default true). */
  deviceInfo?: boolean;
  /** Send tunnel_connected once the target accepts (default true); false models peers that never confirm. */
  confirm?: boolean;
  /** Do not dial at all: answer every tunnel_connect with nothing (connect-timeout tests). */
  silent?: boolean;
  /** flow-v1: how much we grant the relay up front (default INITIAL_WINDOW as the contract says). */
  window?: number;
}

/** A relay message of one type, as the union in shared/messages.ts parses it. */
export type RelayMessage<T extends RelayToPeer["type"]> = Extract<RelayToPeer, { type: T }>;

export interface TestPeer {
  ws: WebSocket;
  /** Every control message from the relay, validated against the relay -> peer union. */
  messages: RelayToPeer[];
  /** Text frames from the relay that are not in the union (unknown type or malformed): a relay bug. */
  offContract: string[];
  /** The negotiated subprotocol as the client saw it. */
  protocol: string;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T extends RelayToPeer["type"]>(type: T, timeoutMs?: number): Promise<RelayMessage<T>>;
  sendControl<T extends PeerToRelay["type"]>(type: T, payload?: ControlPayload<T>): void;
  /** Sends any text frame, for tests of what the relay does with off-contract input. */
  sendText(text: string): void;
  close(): void;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** Opens one peer socket and resolves once the WebSocket is open (or closed straight away). */
export function connectPeer(opts: TestPeerOptions): Promise<TestPeer> {
  const protocols = [...(opts.protocols ?? []), ...(opts.token ? [`token.${opts.token}`] : [])];
  const ws = new WebSocket(opts.url, protocols, { perMessageDeflate: false });
  const binary = (opts.mode ?? "binary") === "binary";
  const flow = binary && opts.flow === true;
  const messages: RelayToPeer[] = [];
  const offContract: string[] = [];
  const waiters = new Set<() => void>();
  const targets = new Map<string, { sock: Socket; sendCredit: number; drained: number }>();

  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code, reason) => {
      for (const t of targets.values()) t.sock.destroy();
      resolve({ code, reason: reason.toString() });
    });
  });
  ws.on("error", () => {});

  const send = (data: string | Uint8Array) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  };
  const sendControl = <T extends PeerToRelay["type"]>(type: T, payload?: ControlPayload<T>) =>
    send(JSON.stringify({ type, payload: payload ?? {} }));

  const toRelay = (sessionId: string, bytes: Buffer) => {
    if (binary) send(encodeFrame(FRAME_DATA, sessionId, bytes));
    else sendControl("tunnel_data", { sessionId, data: bytes.toString("base64") });
  };

  const pumpTarget = (sessionId: string) => {
    const t = targets.get(sessionId);
    if (!t || !flow) return;
    if (t.sendCredit > 0) t.sock.resume();
    else t.sock.pause();
  };

  const dial = (sessionId: string, host: string, port: number) => {
    if (!LOOPBACK.has(host)) {
      sendControl("tunnel_open_failed", {
        sessionId,
        reason: "blocked_target",
        detail: "test peer: loopback only",
      });
      return;
    }
    const sock = connect({ host, port });
    const t = { sock, sendCredit: opts.window ?? INITIAL_WINDOW, drained: 0 };
    targets.set(sessionId, t);
    let opened = false;
    sock.on("connect", () => {
      opened = true;
      if (opts.confirm !== false) sendControl("tunnel_connected", { sessionId });
    });
    sock.on("data", (chunk: Buffer) => {
      if (!flow) {
        toRelay(sessionId, chunk);
        return;
      }
      // Never exceed the relay's credit: split the chunk and hold the rest until a window update.
      let rest = chunk;
      while (rest.length > 0 && t.sendCredit > 0) {
        const n = Math.min(rest.length, t.sendCredit);
        toRelay(sessionId, rest.subarray(0, n));
        t.sendCredit -= n;
        rest = rest.subarray(n);
      }
      if (rest.length > 0) {
        sock.pause();
        sock.unshift(rest);
      }
      pumpTarget(sessionId);
    });
    sock.on("end", () => {
      // Legacy peers have no half close: the "close" handler below reports tunnel_closed.
      if (flow) send(encodeFrame(FRAME_END, sessionId));
    });
    sock.on("error", (err: Error & { code?: string }) => {
      if (!opened) {
        const reason = err.code === "ECONNREFUSED" ? "connection_refused" : "unknown";
        sendControl("tunnel_open_failed", { sessionId, reason, detail: err.message, durationMs: 1 });
      }
    });
    sock.on("close", () => {
      if (targets.get(sessionId) === t) {
        targets.delete(sessionId);
        if (opened) sendControl("tunnel_closed", { sessionId });
      }
    });
  };

  const fromRelay = (sessionId: string, bytes: Uint8Array) => {
    const t = targets.get(sessionId);
    if (!t) return;
    const n = bytes.length;
    t.sock.write(bytes, () => {
      if (!flow) return;
      t.drained += n;
      if (t.drained >= 64 * 1024 || t.sock.writableLength === 0) {
        send(encodeWindow(sessionId, t.drained));
        t.drained = 0;
      }
    });
  };

  ws.on("message", (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
    if (isBinary) {
      const d = decodeFrame(buf);
      if (!d.ok) return;
      const { type, sessionId, payload } = d.frame;
      if (type === FRAME_DATA) fromRelay(sessionId, payload);
      else if (type === FRAME_CLOSE) targets.get(sessionId)?.sock.destroy();
      else if (type === FRAME_END) targets.get(sessionId)?.sock.end();
      else if (type === FRAME_WINDOW) {
        const t = targets.get(sessionId);
        if (t) {
          t.sendCredit += windowCredit(d.frame) ?? 0;
          pumpTarget(sessionId);
        }
      }
      return;
    }
    const received = receiveFromRelay(buf.toString("utf8"));
    if (received.kind !== "known") {
      offContract.push(buf.toString("utf8"));
      return;
    }
    const msg = received.msg;
    messages.push(msg);
    if (msg.type === "tunnel_connect" && !opts.silent)
      dial(msg.payload.sessionId, msg.payload.host, msg.payload.port);
    else if (msg.type === "tunnel_data")
      fromRelay(msg.payload.sessionId, Buffer.from(msg.payload.data, "base64"));
    else if (msg.type === "tunnel_close") targets.get(msg.payload.sessionId)?.sock.destroy();
    for (const w of [...waiters]) w();
  });

  const peer: TestPeer = {
    ws,
    messages,
    offContract,
    protocol: "",
    closed,
    sendControl,
    sendText: send,
    close: () => ws.close(1000),
    waitFor(type, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < messages.length; seen++) {
            const m = messages[seen]!;
            if (m.type === type) {
              cleanup();
              resolve(m as RelayMessage<typeof type>);
              return;
            }
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `peer: no ${type} within ${timeoutMs} ms (got ${messages.map((m) => m.type)}; off contract: ${offContract.length})`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };

  return new Promise((resolve, reject) => {
    ws.once("open", () => {
      peer.protocol = ws.protocol;
      if (opts.deviceInfo !== false) {
        sendControl("device_info", {
          country: "US",
          carrier: "test",
          currentIp: "auto",
          protocol: binary ? "binary-v1" : "json",
          supportsRelayRedirect: opts.supportsRelayRedirect ?? false,
          sdkVersion: "relay-test/1",
          ...(flow ? { capabilities: ["flow-v1"] } : {}),
        });
      }
      resolve(peer);
    });
    ws.once("unexpected-response", (_req, res) => reject(new Error(`peer: HTTP ${res.statusCode}`)));
    ws.once("error", reject);
  });
}
