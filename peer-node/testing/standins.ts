// Stand-ins for the relay and the registration API, for the SDK's own tests only. They are
// deliberately tiny: they let a test script the other side of the wire (close one socket with 4002,
// send a relay_redirect, grant or withhold flow-v1 credit) in ways the real relay never would on
// demand. End-to-end behaviour against the real relay and the real API is in e2e.test.ts.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";
import { decodeFrame, type Frame } from "../../shared/frame.ts";
import {
  type ControlPayload,
  control,
  parseControl,
  type RelayToPeer,
  receiveFromPeer,
} from "../../shared/messages.ts";

export interface RelayConn {
  ws: WebSocket;
  protocol: string;
  url: string;
  controls: { type: string; payload: Record<string, unknown> }[];
  /** Text frames from the peer that the peer -> relay union in shared/messages.ts refuses: an SDK bug. */
  offContract: string[];
  frames: Frame[];
  closed: Promise<{ code: number }>;
  send<T extends RelayToPeer["type"]>(type: T, payload?: ControlPayload<T>): void;
}

export interface StandinRelay {
  url: string;
  conns: RelayConn[];
  /** Tokens this relay refuses with 4002 on connect. */
  refuse: Set<string>;
  onConn(fn: (c: RelayConn) => void): void;
  onFrame(fn: (c: RelayConn, f: Frame) => void): void;
  close(): Promise<void>;
}

export async function startStandinRelay(): Promise<StandinRelay> {
  const wss = new WebSocketServer({
    port: 0,
    host: "127.0.0.1",
    handleProtocols: (protocols) => [...protocols].find((p) => p.startsWith("token.")) ?? false,
  });
  await new Promise<void>((r) => wss.once("listening", () => r()));
  const port = (wss.address() as AddressInfo).port;
  const connListeners: ((c: RelayConn) => void)[] = [];
  const frameListeners: ((c: RelayConn, f: Frame) => void)[] = [];
  const relay: StandinRelay = {
    url: `ws://127.0.0.1:${port}`,
    conns: [],
    refuse: new Set(),
    onConn: (fn) => void connListeners.push(fn),
    onFrame: (fn) => void frameListeners.push(fn),
    close: () =>
      new Promise((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
  wss.on("connection", (ws, req: IncomingMessage) => {
    const token = ws.protocol.slice("token.".length);
    const conn: RelayConn = {
      ws,
      protocol: ws.protocol,
      url: req.url ?? "",
      controls: [],
      offContract: [],
      frames: [],
      closed: new Promise((r) => ws.on("close", (code) => r({ code }))),
      send: (type, payload) => ws.send(control(type, payload ?? ({} as ControlPayload<typeof type>))),
    };
    relay.conns.push(conn);
    if (relay.refuse.has(token)) {
      ws.close(4002, "token expired");
      return;
    }
    ws.on("message", (data: Buffer, isBinary) => {
      if (isBinary) {
        const d = decodeFrame(data);
        if (d.ok) {
          conn.frames.push(d.frame);
          for (const fn of frameListeners) fn(conn, d.frame);
        }
        return;
      }
      const text = data.toString("utf8");
      if (receiveFromPeer(text).kind !== "known") conn.offContract.push(text);
      const msg = parseControl(text);
      if (!msg) return;
      conn.controls.push(msg);
      if (msg.type === "device_info")
        conn.send("connected", { deviceId: "agent_test", ip: "127.0.0.1", relayId: "standin" });
      if (msg.type === "heartbeat") conn.send("heartbeat_ack");
    });
    for (const fn of connListeners) fn(conn);
  });
  return relay;
}

export interface StandinApi {
  url: string;
  calls: { path: string; body: Record<string, unknown>; at: number }[];
  /** Relay URL handed out at registration (and on refresh unless refreshRelay is set). */
  relay: string;
  /** Relay URL the refresh answers name; null: answer without `relay`, as an older API did. */
  refreshRelay?: string | null;
  /** Every issued JWT, in order. */
  jwts: string[];
  /** When set, register answers this status instead. */
  registerStatus?: number;
  /** This many refreshes answer 503 E_UNAVAILABLE with `Retry-After: 1` (a database at its limit). */
  refreshBusy?: number;
  /** Leave the Retry-After off those 503s. */
  refreshBusyNoHint?: boolean;
  close(): Promise<void>;
}

/** Registration API stand-in: deviceId derivation as PROTOCOL.md, opaque tokens, rotation on refresh. */
export async function startStandinApi(relay: string): Promise<StandinApi> {
  const { createHash, randomBytes } = await import("node:crypto");
  const refreshTokens = new Map<string, string>();
  const api: StandinApi = { url: "", calls: [], relay, jwts: [], close: async () => {} };
  const issue = () => {
    const jwt = `jwt-${randomBytes(6).toString("hex")}`;
    api.jwts.push(jwt);
    return jwt;
  };
  const server: Server = createServer(async (req, res) => {
    let text = "";
    for await (const chunk of req) text += chunk;
    const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
    const path = req.url ?? "";
    api.calls.push({ path, body, at: Date.now() });
    const reply = (status: number, json: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(json));
    };
    if (path === "/v1/peer/agents/register") {
      if (api.registerStatus)
        return reply(api.registerStatus, { error: { code: "DENIED", message: "denied" } });
      const deviceId = `agent_${createHash("sha256").update(`${body["apiKey"]}:${body["name"]}`).digest("hex").slice(0, 16)}`;
      const refreshToken = `rt-${randomBytes(6).toString("hex")}`;
      refreshTokens.set(deviceId, refreshToken);
      const jwt = issue();
      return reply(200, {
        deviceId,
        token: jwt,
        jwt,
        refreshToken,
        relay: api.relay,
        earningsPerGB: {},
        ipType: "residential",
      });
    }
    const m = /^\/v1\/peer\/agents\/([^/]+)\/refresh$/.exec(path);
    if (m) {
      const deviceId = decodeURIComponent(m[1]!);
      if (api.refreshBusy) {
        api.refreshBusy--;
        if (!api.refreshBusyNoHint) res.setHeader("retry-after", "1");
        return reply(503, { error: { code: "E_UNAVAILABLE", message: "the database is busy" } });
      }
      if (refreshTokens.get(deviceId) !== body["refreshToken"])
        return reply(401, { error: { code: "E_REFRESH_INVALID", message: "bad refresh token" } });
      const refreshToken = `rt-${randomBytes(6).toString("hex")}`;
      refreshTokens.set(deviceId, refreshToken);
      const jwt = issue();
      const relay = api.refreshRelay === undefined ? api.relay : api.refreshRelay;
      return reply(200, { token: jwt, jwt, refreshToken, ...(relay === null ? {} : { relay }) });
    }
    reply(404, { error: { code: "NOT_FOUND", message: path } });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  api.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  api.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return api;
}
