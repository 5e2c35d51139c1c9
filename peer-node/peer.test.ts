import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import {
  encodeFrame,
  encodeWindow,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  INITIAL_WINDOW,
  windowCredit,
} from "../shared/frame.ts";
import { type RunningPeer, type StartPeerOptions, startPeer } from "./src/index.ts";
import { WINDOW_MAX, windowGrowth } from "./src/tunnel.ts";
import {
  type RelayConn,
  type StandinApi,
  type StandinRelay,
  startStandinApi,
  startStandinRelay,
} from "./testing/standins.ts";

// The SDK's side of the wire, pinned against scripted stand-ins (testing/standins.ts) so each rule
// can be provoked on demand. e2e.test.ts runs the same SDK against the real relay and API.

const tmp = mkdtempSync(join(tmpdir(), "peer-sdk-"));
const fast = {
  backoff: { baseMs: 50, maxMs: 400, jitterMs: 20, stableMs: 60_000 },
  heartbeatMs: 200,
  connectTimeoutMs: 2_000,
};

let echo: Server;
let echoPort = 0;
/** A target that reads as fast as it can and keeps only the count. */
let sink: Server;
let sinkPort = 0;
let sunk = 0;
let relay: StandinRelay;
let api: StandinApi;
const peers: RunningPeer[] = [];

beforeAll(async () => {
  echo = createServer({ allowHalfOpen: true }, (s) => {
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  echoPort = (echo.address() as { port: number }).port;
  sink = createServer((s) => s.on("data", (b: Buffer) => (sunk += b.length)));
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", () => r()));
  sinkPort = (sink.address() as { port: number }).port;
  relay = await startStandinRelay();
  api = await startStandinApi(relay.url);
});
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.stop()));
});
afterAll(async () => {
  await relay.close();
  await api.close();
  echo.close();
  sink.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function start(extra: Partial<StartPeerOptions> = {}): Promise<{ peer: RunningPeer; lines: string[] }> {
  const lines: string[] = [];
  const peer = await startPeer({
    apiKey: `psx_${randomBytes(4).toString("hex")}`,
    name: `rig-${randomBytes(3).toString("hex")}`,
    apiUrl: api.url,
    stateFile: join(tmp, `${randomBytes(4).toString("hex")}.json`),
    timing: fast,
    log: (l) => lines.push(l),
    ...extra,
  });
  peers.push(peer);
  return { peer, lines };
}

const connsOf = (jwt: string) => relay.conns.filter((c) => c.protocol === `token.${jwt}`);
const acked = (lines: string[]) =>
  lines.filter((l) => l.startsWith("[ACK] relay confirmed connection")).length;

describe("relay sockets", () => {
  it("opens N sockets, token only in Sec-WebSocket-Protocol, and announces binary-v1 + flow-v1", async () => {
    const { peer, lines } = await start({ connections: 3 });
    await waitUntil(async () => acked(lines) === 3, 5_000, "3 acks");
    const jwt = api.jwts.at(-1)!;
    const conns = connsOf(jwt);
    expect(conns).toHaveLength(3);
    for (const c of conns) {
      expect(c.url).toBe("/");
      expect(c.controls[0]).toEqual({
        type: "device_info",
        payload: {
          country: "US",
          currentIp: "auto",
          protocol: "binary-v1",
          supportsRelayRedirect: true,
          sdkVersion: expect.stringMatching(/^peerproxy-peer-node\//),
          capabilities: ["flow-v1"],
        },
      });
    }
    expect(lines[0]).toBe(`[REGISTERED] device=${peer.deviceId} relay=${relay.url} sockets=3`);
    expect(lines.filter((l) => l.startsWith(`[CONNECTED]  device=${peer.deviceId}`))).toHaveLength(3);
    expect(lines.join("\n")).not.toContain(jwt);
    // heartbeats every interval, on every socket
    await waitUntil(
      async () => conns.every((c) => c.controls.filter((m) => m.type === "heartbeat").length >= 2),
      3_000,
      "heartbeats",
    );
    // Everything the SDK sent is in the peer -> relay union of shared/messages.ts.
    for (const c of conns) expect(c.offContract).toEqual([]);
  });

  it("a 4002 on every socket causes exactly one refresh, then all sockets come back with the new token", async () => {
    const { peer, lines } = await start({ connections: 4 });
    await waitUntil(async () => acked(lines) === 4, 5_000, "4 acks");
    const oldJwt = api.jwts.at(-1)!;
    const refreshesBefore = api.calls.filter(
      (c) => c.path.includes(peer.deviceId) && c.path.endsWith("/refresh"),
    ).length;
    relay.refuse.add(oldJwt);
    for (const c of connsOf(oldJwt)) c.ws.close(4002, "token expired");
    await waitUntil(async () => acked(lines) === 8, 5_000, "4 more acks");
    const refreshes =
      api.calls.filter((c) => c.path === `/v1/peer/agents/${peer.deviceId}/refresh`).length - refreshesBefore;
    expect(refreshes).toBe(1);
    const newJwt = api.jwts.at(-1)!;
    expect(newJwt).not.toBe(oldJwt);
    expect(connsOf(newJwt).filter((c) => c.ws.readyState === c.ws.OPEN)).toHaveLength(4);
    expect(lines.filter((l) => l.startsWith("[REFRESHED]"))).toHaveLength(1);
  });

  it("a restart resumes the saved device by refresh instead of registering again", async () => {
    const stateFile = join(tmp, "resume.json");
    const apiKey = "psx_resume";
    const first = await start({ apiKey, name: "rig-resume", stateFile, connections: 1 });
    const id = first.peer.deviceId;
    expect(id).toBe(
      `agent_${createHash("sha256").update(`${apiKey}:rig-resume`).digest("hex").slice(0, 16)}`,
    );
    await first.peer.stop();
    const registersBefore = api.calls.filter((c) => c.path === "/v1/peer/agents/register").length;
    const second = await start({ apiKey, name: "rig-resume", stateFile, connections: 1 });
    expect(second.peer.deviceId).toBe(id);
    expect(api.calls.filter((c) => c.path === "/v1/peer/agents/register").length).toBe(registersBefore);
    expect(api.calls.at(-1)!.path).toBe(`/v1/peer/agents/${id}/refresh`);
  });

  it("reconnects a socket the relay dropped, with backoff", async () => {
    const { lines } = await start({ connections: 2 });
    await waitUntil(async () => acked(lines) === 2, 5_000, "2 acks");
    const jwt = api.jwts.at(-1)!;
    connsOf(jwt)[0]!.ws.terminate();
    await waitUntil(async () => acked(lines) === 3, 5_000, "the dropped socket is back");
    expect(connsOf(jwt).filter((c) => c.ws.readyState === c.ws.OPEN)).toHaveLength(2);
  });
});

describe("relay_redirect", () => {
  it("follows an allowed redirect once: all sockets close with 4100 and reconnect there; a second one within 60 s is ignored", async () => {
    const other = await startStandinRelay();
    const third = await startStandinRelay();
    try {
      const { peer, lines } = await start({ connections: 2 });
      await waitUntil(async () => acked(lines) === 2, 5_000, "2 acks");
      const conns = connsOf(api.jwts.at(-1)!);
      for (const c of conns) c.send("relay_redirect", { relay: other.url, reason: "geo" });
      const codes = await Promise.all(conns.map((c) => c.closed));
      expect(codes.map((c) => c.code)).toEqual([4100, 4100]);
      await waitUntil(
        async () => other.conns.filter((c) => c.ws.readyState === c.ws.OPEN).length === 2,
        5_000,
        "moved",
      );
      expect(peer.peer.relayUrl).toBe(other.url);
      expect(lines.filter((l) => l.startsWith("[REDIRECT]"))).toHaveLength(1);
      other.conns[0]!.send("relay_redirect", { relay: third.url, reason: "geo" });
      await new Promise((r) => setTimeout(r, 300));
      expect(third.conns).toHaveLength(0);
    } finally {
      await other.close();
      await third.close();
    }
  });

  it("ignores redirects when the relay is pinned or the target is off the allow-list", async () => {
    const pinned = await start({ connections: 1, relayUrl: relay.url });
    await waitUntil(async () => acked(pinned.lines) === 1, 5_000, "ack");
    const offList = await start({ connections: 1, relayAllowlist: ["relays.example.net"] });
    await waitUntil(async () => acked(offList.lines) === 1, 5_000, "ack");
    const other = await startStandinRelay();
    try {
      for (const jwt of api.jwts.slice(-2))
        for (const c of connsOf(jwt)) c.send("relay_redirect", { relay: other.url });
      await new Promise((r) => setTimeout(r, 300));
      expect(other.conns).toHaveLength(0);
      expect(pinned.peer.peer.relayUrl).toBe(relay.url);
      expect(offList.peer.peer.relayUrl).toBe(relay.url);
    } finally {
      await other.close();
    }
  });
});

/** Opens a tunnel from the stand-in relay's side and collects what the peer sends for it. */
function tunnel(conn: RelayConn, sessionId: string, host: string, port: number) {
  const got: Buffer[] = [];
  const windows: number[] = [];
  let ended = false;
  relay.onFrame((c, f) => {
    if (c !== conn || f.sessionId !== sessionId) return;
    if (f.type === FRAME_DATA) got.push(Buffer.from(f.payload));
    if (f.type === FRAME_WINDOW) windows.push(windowCredit(f)!);
    if (f.type === FRAME_END) ended = true;
  });
  conn.send("tunnel_connect", { sessionId, host, port });
  const reply = () =>
    conn.controls.find((m) => m.payload["sessionId"] === sessionId && m.type.startsWith("tunnel_"));
  return {
    got,
    windows,
    ended: () => ended,
    bytes: () => got.reduce((n, b) => n + b.length, 0),
    reply: () => waitUntil(async () => reply(), 5_000, `reply for ${sessionId}`),
    send: (data: Uint8Array) => conn.ws.send(encodeFrame(FRAME_DATA, sessionId, data)),
  };
}

describe("tunnels", () => {
  it("refuses a loopback target by default with blocked_target, after resolving the name", async () => {
    const { lines } = await start({ connections: 1 });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    for (const [sid, host] of [
      ["s-lo", "127.0.0.1"],
      ["s-name", "localhost"],
      ["s-meta", "169.254.169.254"],
      ["s-mapped", "::ffff:127.0.0.1"],
    ] as const) {
      const reply = await tunnel(conn, sid, host, echoPort).reply();
      expect(reply).toMatchObject({
        type: "tunnel_open_failed",
        payload: { sessionId: sid, reason: "blocked_target" },
      });
      expect(typeof reply.payload["durationMs"]).toBe("number");
      expect(typeof reply.payload["detail"]).toBe("string");
    }
  });

  it("with the development flag it connects, logs [TUNNEL_CONNECT]/[TCP_OPEN_OK] and relays 2 MiB within flow-v1 credit", async () => {
    const { lines } = await start({ connections: 1, allowPrivateTargets: true, verbose: true });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    const t = tunnel(conn, "s-echo", "127.0.0.1", echoPort);
    expect(await t.reply()).toEqual({ type: "tunnel_connected", payload: { sessionId: "s-echo" } });
    expect(
      lines.some((l) => l.startsWith(`[TUNNEL_CONNECT] session=s-echo target=127.0.0.1:${echoPort}`)),
    ).toBe(true);
    expect(lines.some((l) => l.startsWith("[TCP_OPEN_OK] session=s-echo"))).toBe(true);

    // Send 2 MiB while granting no credit: the peer may return at most its initial window.
    const payload = randomBytes(2 * 1024 * 1024);
    let sent = 0;
    const sendWithinPeerWindow = () => {
      const granted = INITIAL_WINDOW + t.windows.reduce((a, b) => a + b, 0);
      while (sent < payload.length && sent < granted) {
        const n = Math.min(32 * 1024, granted - sent, payload.length - sent);
        t.send(payload.subarray(sent, sent + n));
        sent += n;
      }
    };
    sendWithinPeerWindow();
    await waitUntil(async () => t.bytes() === INITIAL_WINDOW, 5_000, "the echo fills our window");
    await new Promise((r) => setTimeout(r, 200));
    expect(t.bytes()).toBe(INITIAL_WINDOW); // paused on exhausted credit, nothing more
    // Grant credit as we "read", keep sending as the peer grants us credit back.
    let granted = INITIAL_WINDOW;
    await waitUntil(
      async () => {
        sendWithinPeerWindow();
        if (t.bytes() >= granted) {
          conn.ws.send(encodeWindow("s-echo", 128 * 1024));
          granted += 128 * 1024;
        }
        return t.bytes() === payload.length;
      },
      20_000,
      "2 MiB echoed",
    );
    const back = Buffer.concat(t.got);
    expect(createHash("sha256").update(back).digest("hex")).toBe(
      createHash("sha256").update(payload).digest("hex"),
    );
    expect(t.windows.length).toBeGreaterThan(0);
    // half close: our end -> target ends -> the peer sends end, then tunnel_closed
    conn.ws.send(encodeFrame(FRAME_END, "s-echo"));
    await waitUntil(async () => t.ended(), 5_000, "end frame");
    await waitUntil(
      async () =>
        conn.controls.find((m) => m.type === "tunnel_closed" && m.payload["sessionId"] === "s-echo"),
      5_000,
      "tunnel_closed",
    );
    expect(conn.offContract).toEqual([]);
  });

  it("eight tunnels at once, credit in odd steps: every read of the shared read area arrives intact on its own session", async () => {
    // Target reads are framed in place in one area shared by every tunnel, and the part of a read
    // past the relay's credit is copied out to wait (tunnel.ts): interleaved tunnels and credit
    // edges inside reads are where a retained or overwritten view would show as corrupt bytes.
    const { lines } = await start({ connections: 1, allowPrivateTargets: true });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    const size = 768 * 1024;
    const step = 100_003; // credit edges fall inside reads, never on a 64 KiB boundary
    const runs = Array.from({ length: 8 }, (_, i) => {
      const sid = `s-area-${i}`;
      return {
        sid,
        t: tunnel(conn, sid, "127.0.0.1", echoPort),
        payload: randomBytes(size),
        sent: 0,
        granted: INITIAL_WINDOW,
      };
    });
    for (const r of runs)
      expect(await r.t.reply()).toEqual({ type: "tunnel_connected", payload: { sessionId: r.sid } });
    await waitUntil(
      async () => {
        for (const r of runs) {
          const peerCredit = INITIAL_WINDOW + r.t.windows.reduce((a, b) => a + b, 0);
          while (r.sent < size && r.sent < peerCredit) {
            const n = Math.min(48 * 1024, peerCredit - r.sent, size - r.sent);
            r.t.send(r.payload.subarray(r.sent, r.sent + n));
            r.sent += n;
          }
          if (r.t.bytes() >= r.granted && r.granted < size) {
            conn.ws.send(encodeWindow(r.sid, step));
            r.granted += step;
          }
        }
        return runs.every((r) => r.t.bytes() === size);
      },
      30_000,
      "eight echoes",
    );
    for (const r of runs)
      expect(createHash("sha256").update(Buffer.concat(r.t.got)).digest("hex"), r.sid).toBe(
        createHash("sha256").update(r.payload).digest("hex"),
      );
    expect(conn.offContract).toEqual([]);
  });

  /** Sends `total` bytes to the sink as fast as the peer's credit allows; the peer's final window. */
  async function fill(conn: RelayConn, sessionId: string, total: number) {
    const t = tunnel(conn, sessionId, "127.0.0.1", sinkPort);
    expect(await t.reply()).toEqual({ type: "tunnel_connected", payload: { sessionId } });
    const chunk = randomBytes(64 * 1024);
    let sent = 0;
    const credit = () => INITIAL_WINDOW + t.windows.reduce((a, b) => a + b, 0);
    const deadline = Date.now() + 30_000;
    while (sent < total) {
      if (Date.now() > deadline)
        throw new Error(`only ${sent} of ${total} bytes sent within the peer's credit`);
      while (sent < total && sent + chunk.length <= credit()) {
        t.send(chunk);
        sent += chunk.length;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    // What the peer lets us have outstanding now: its window (less what it has yet to grant back).
    return { t, window: () => credit() - sent };
  }

  it("a fast tunnel's relay -> target window grows in doubling steps up to WINDOW_MAX, and the process budget returns when it ends", async () => {
    const { lines } = await start({ connections: 1, allowPrivateTargets: true });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    const before = sunk;
    const { window } = await fill(conn, "s-grow", 48 * 1024 * 1024);
    await waitUntil(async () => sunk - before === 48 * 1024 * 1024, 10_000, "all of it at the sink");
    const grown = window();
    console.log(`[measure] relay -> target window after 48 MiB to a fast sink: ${grown} B`);
    expect(grown).toBeGreaterThanOrEqual(1024 * 1024);
    expect(grown).toBeLessThanOrEqual(WINDOW_MAX);
    expect(windowGrowth.grown).toBeGreaterThan(0);
    conn.send("tunnel_close", { sessionId: "s-grow" });
    await waitUntil(async () => windowGrowth.grown === 0, 5_000, "the budget given back");
  });

  it("windows grow no further than the process budget", async () => {
    const { budget } = windowGrowth;
    windowGrowth.budget = 512 * 1024;
    try {
      const { lines } = await start({ connections: 1, allowPrivateTargets: true });
      await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
      const conn = connsOf(api.jwts.at(-1)!)[0]!;
      const { window } = await fill(conn, "s-budget", 24 * 1024 * 1024);
      expect(windowGrowth.grown).toBeLessThanOrEqual(512 * 1024);
      expect(window()).toBeLessThanOrEqual(INITIAL_WINDOW + 512 * 1024);
      conn.send("tunnel_close", { sessionId: "s-budget" });
      await waitUntil(async () => windowGrowth.grown === 0, 5_000, "the budget given back");
    } finally {
      windowGrowth.budget = budget;
    }
  });

  it("a name whose lookup never answers fails with timeout instead of leaving the relay waiting", async () => {
    const { lines } = await start({
      connections: 1,
      timing: { ...fast, connectTimeoutMs: 300 },
      lookup: () => new Promise(() => {}), // stand-in for a resolver that never answers
    });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    const reply = await tunnel(conn, "s-slowdns", "slow.example", 443).reply();
    expect(reply).toMatchObject({
      type: "tunnel_open_failed",
      payload: { reason: "timeout", detail: "dns lookup timed out" },
    });
    expect(reply.payload["durationMs"]).toBeGreaterThanOrEqual(290);
  });

  it("reports connection_refused for a closed port", async () => {
    const { lines } = await start({ connections: 1, allowPrivateTargets: true });
    await waitUntil(async () => acked(lines) === 1, 5_000, "ack");
    const conn = connsOf(api.jwts.at(-1)!)[0]!;
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    expect(await tunnel(conn, "s-refused", "127.0.0.1", port).reply()).toMatchObject({
      type: "tunnel_open_failed",
      payload: { reason: "connection_refused" },
    });
  });
});
