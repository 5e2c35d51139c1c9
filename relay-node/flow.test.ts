import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import {
  decodeFrame,
  encodeFrame,
  FRAME_DATA,
  FRAME_WINDOW,
  INITIAL_WINDOW,
  windowCredit,
} from "../shared/frame.ts";
import { connectPeer, type TestPeerOptions } from "./testing/peer.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";
import { requestTunnel } from "./testing/tunnel-client.ts";

const MiB = 1024 * 1024;
const PAYLOAD = randomBytes(6 * MiB);
let t: TestRelay;
let source: Server;
let sourcePort: number;
/** Sends the payload and keeps the connection open: the session is still there to inspect. */
let holdingSource: Server;
let holdingSourcePort: number;
let sink: Server;
let sinkPort: number;
let sinkReceived: Promise<Buffer>;
let onSinkDone: (b: Buffer) => void = () => {};

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  );
}

/**
 * Reads like a customer: everything as it comes, or, with pauseMs, like one on a slow link (a
 * chunk, then a pause).
 */
function readAll(sock: Socket, early: Buffer, total: number, pauseMs = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts = [early];
    let got = early.length;
    sock.on("data", (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= total) return resolve(Buffer.concat(parts));
      if (!pauseMs) return;
      sock.pause();
      setTimeout(() => sock.resume(), pauseMs);
    });
    sock.on("error", reject);
    sock.on("close", () => reject(new Error(`closed after ${got} of ${total} bytes`)));
    sock.resume();
  });
}

beforeAll(async () => {
  t = await startTestRelay();
  // Speaks first: sends the payload as fast as the tunnel takes it.
  source = createServer((s) => {
    s.on("error", () => {});
    s.end(PAYLOAD);
  });
  sourcePort = await listen(source);
  holdingSource = createServer((s) => {
    s.on("error", () => {});
    s.write(PAYLOAD);
  });
  holdingSourcePort = await listen(holdingSource);
  // Reads slowly: a target on a slow link.
  sink = createServer((s) => {
    s.on("error", () => {});
    const parts: Buffer[] = [];
    let got = 0;
    s.on("data", (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= PAYLOAD.length) {
        onSinkDone(Buffer.concat(parts));
        s.end();
        return;
      }
      s.pause();
      setTimeout(() => s.resume(), 3);
    });
  });
  sinkPort = await listen(sink);
});

afterAll(async () => {
  await t?.close();
  source?.close();
  holdingSource?.close();
  sink?.close();
});

async function openFor(opts: Omit<TestPeerOptions, "url" | "token">, port: number, on: TestRelay = t) {
  const id = on.newDeviceId();
  const peer = await connectPeer({ url: on.relay.wsUrl, token: await on.token(id), ...opts });
  await peer.waitFor("connected");
  peer.sendControl("heartbeat");
  await peer.waitFor("heartbeat_ack");
  const res = await requestTunnel({
    internalUrl: on.relay.internalUrl,
    secret: on.sharedSecret,
    deviceId: id,
    target: `127.0.0.1:${port}`,
  });
  if (!res.ok) throw new Error(`tunnel status ${res.status}`);
  const session = [...on.relay.state.sessions.values()].find((s) => s.conn.device.id === id);
  if (!session) throw new Error("no session on the relay");
  return { peer, res, session };
}

/**
 * A flow-v1 peer that dials nothing and speaks for itself: the tunnel to `sourcePort` is open once
 * it has confirmed; what crosses it is the test's to send.
 */
async function openManual(onFrame?: (data: Buffer, isBinary: boolean) => void) {
  const id = t.newDeviceId();
  const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id), flow: true, silent: true });
  if (onFrame) peer.ws.on("message", onFrame);
  await peer.waitFor("connected");
  peer.sendControl("heartbeat");
  await peer.waitFor("heartbeat_ack");
  const pending = requestTunnel({
    internalUrl: t.relay.internalUrl,
    secret: t.sharedSecret,
    deviceId: id,
    target: `127.0.0.1:${sourcePort}`,
  });
  const sid = String((await peer.waitFor("tunnel_connect")).payload.sessionId);
  peer.sendControl("tunnel_connected", { sessionId: sid });
  const res = await pending;
  if (!res.ok) throw new Error(`status ${res.status}`);
  return { peer, sid, res };
}

describe("flow control: no buffer grows without bound", () => {
  it("flow-v1: a slow customer reader never makes the relay hold more than 2 x window for the session", async () => {
    const { peer, res, session } = await openFor({ mode: "binary", flow: true }, sourcePort);
    expect(session.flow).toBe(true);
    // The customer does not read at first, so the kernel's buffers fill and the relay has to hold
    // bytes whatever the machine's load (a reader that is only slow may keep up with a loaded relay).
    await waitUntil(
      async () => session.maxBuffered > 0,
      10_000,
      "the relay to hold bytes for the stalled reader",
    );
    const got = await readAll(res.socket, res.early, PAYLOAD.length, 4);
    expect(sha(got)).toBe(sha(PAYLOAD));
    console.log(
      `[measure] flow-v1 slow reader: relay held at most ${session.maxBuffered} bytes (window ${session.window})`,
    );
    expect(session.maxBuffered).toBeGreaterThan(0);
    expect(session.maxBuffered).toBeLessThanOrEqual(2 * session.window);
    expect(session.window).toBeLessThanOrEqual(t.relay.state.config.TUNNEL_WINDOW_MAX_BYTES);
    res.socket.destroy();
    peer.close();
  });

  it("flow-v1: a slow target never makes the relay hold more than 2 x window for the session", async () => {
    sinkReceived = new Promise((r) => {
      onSinkDone = r;
    });
    const { peer, res, session } = await openFor({ mode: "binary", flow: true }, sinkPort);
    res.socket.resume();
    res.socket.write(PAYLOAD);
    const got = await sinkReceived;
    expect(sha(got)).toBe(sha(PAYLOAD));
    console.log(`[measure] flow-v1 slow target: relay held at most ${session.maxBuffered} bytes`);
    expect(session.maxBuffered).toBeLessThanOrEqual(2 * INITIAL_WINDOW);
    res.socket.destroy();
    peer.close();
  });

  it("flow-v1: a customer who keeps up grows the window (doubling, capped), and a closed tunnel gives the growth back", async () => {
    const grownBefore = t.relay.state.metrics.windowsGrown;
    const { peer, res, session } = await openFor({ mode: "binary", flow: true }, holdingSourcePort);
    const got = await readAll(res.socket, res.early, PAYLOAD.length);
    expect(sha(got)).toBe(sha(PAYLOAD));
    console.log(`[measure] flow-v1 fast reader: window grew to ${session.window} bytes`);
    expect(session.window).toBeGreaterThan(INITIAL_WINDOW);
    expect(session.window).toBeLessThanOrEqual(t.relay.state.config.TUNNEL_WINDOW_MAX_BYTES);
    // Doubling from 256 KiB: always a power-of-two multiple of the initial window.
    expect(Number.isInteger(Math.log2(session.window / INITIAL_WINDOW))).toBe(true);
    expect(t.relay.state.metrics.windowsGrown).toBeGreaterThan(grownBefore);
    expect(t.relay.state.grownWindowBytes).toBeGreaterThanOrEqual(session.window - INITIAL_WINDOW);
    res.socket.destroy();
    await waitUntil(async () => !t.relay.state.sessions.has(session.id), 5_000, "the session to close");
    expect(t.relay.state.grownWindowBytes).toBe(0);
    peer.close();
  });

  it("flow-v1: windows grow only within the relay's budget (TUNNEL_WINDOW_BUDGET_BYTES), shared by all tunnels", async () => {
    const budget = INITIAL_WINDOW; // one doubling in all
    const small = await startTestRelay({ TUNNEL_WINDOW_BUDGET_BYTES: String(budget) });
    try {
      const opened = await Promise.all(
        [0, 1, 2].map(() => openFor({ mode: "binary", flow: true }, holdingSourcePort, small)),
      );
      const sessions = opened.map((o) => o.session);
      let most = 0;
      const watch = setInterval(() => (most = Math.max(most, small.relay.state.grownWindowBytes)), 1);
      const got = await Promise.all(opened.map((o) => readAll(o.res.socket, o.res.early, PAYLOAD.length)));
      clearInterval(watch);
      for (const g of got) expect(sha(g)).toBe(sha(PAYLOAD));
      const grown = sessions.reduce((n, s) => n + s.window - INITIAL_WINDOW, 0);
      console.log(`[measure] three fast tunnels, budget ${budget}: grew ${grown} bytes in all`);
      // All three stay open and each moved a whole payload fast: the budget, and only it, went.
      expect(grown).toBe(budget);
      expect(small.relay.state.grownWindowBytes).toBe(budget);
      expect(most).toBeLessThanOrEqual(budget);
      for (const o of opened) {
        o.res.socket.destroy();
        o.peer.close();
      }
      await waitUntil(async () => small.relay.state.sessions.size === 0, 5_000, "the sessions to close");
      expect(small.relay.state.grownWindowBytes).toBe(0);
    } finally {
      await small.close();
    }
  });

  it("legacy: socket-level backpressure keeps the relay's buffer for a slow reader bounded (under 3 MiB for 6 MiB sent)", async () => {
    const { peer, res, session } = await openFor({ mode: "legacy" }, sourcePort);
    expect(session.flow).toBe(false);
    const got = await readAll(res.socket, res.early, PAYLOAD.length, 4);
    expect(sha(got)).toBe(sha(PAYLOAD));
    console.log(`[measure] legacy slow reader: relay held at most ${session.maxBuffered} bytes`);
    expect(session.maxBuffered).toBeLessThan(3 * MiB);
    res.socket.destroy();
    peer.close();
  });

  it("flow-v1: a small answer costs no window update, and a whole window sent in small pieces comes back in a few", async () => {
    const grants: number[] = [];
    const { peer, sid, res } = await openManual((data, isBinary) => {
      const d = isBinary ? decodeFrame(data) : undefined;
      if (d?.ok && d.frame.type === FRAME_WINDOW) grants.push(windowCredit(d.frame) ?? Number.NaN);
    });
    let arrived = res.early.length;
    res.socket.on("data", (c: Buffer) => (arrived += c.length));
    const reading = readAll(res.socket, res.early, INITIAL_WINDOW);
    // A 199-byte answer that the customer reads at once: before, the relay sent credit for it.
    peer.ws.send(encodeFrame(FRAME_DATA, sid, Buffer.alloc(199, 7)));
    await waitUntil(async () => arrived === 199, 5_000, "the answer to reach the customer");
    await new Promise((r) => setTimeout(r, 100));
    expect(grants).toEqual([]);
    // The rest of the window in 4 KiB pieces, each written before the next arrives: credit comes
    // back in steps (at least every quarter window), not one update per piece.
    const rest = INITIAL_WINDOW - 199;
    for (let sent = 0; sent < rest; sent += 4096)
      peer.ws.send(encodeFrame(FRAME_DATA, sid, Buffer.alloc(Math.min(4096, rest - sent), 7)));
    expect((await reading).length).toBe(INITIAL_WINDOW);
    await waitUntil(
      async () => grants.reduce((a, b) => a + b, 0) >= INITIAL_WINDOW - INITIAL_WINDOW / 4,
      5_000,
      "credit for the window the customer read",
    );
    console.log(
      `[measure] a window in 64 pieces of 4 KiB: ${grants.length} window updates (${grants.join(", ")})`,
    );
    expect(grants.length).toBeLessThanOrEqual(4);
    // With its credit back the peer goes on: one more piece is within the window.
    peer.ws.send(encodeFrame(FRAME_DATA, sid, Buffer.alloc(4096, 7)));
    await new Promise((r) => setTimeout(r, 100));
    expect(t.relay.state.sessions.has(sid)).toBe(true);
    res.socket.destroy();
    peer.close();
  });

  it("a data frame that spans the relay's reads (as a 64 KiB one in a stream does) leaves for the gateway in one system call", async () => {
    const { peer, sid, res } = await openManual();
    const gw = t.relay.state.sessions.get(sid)!.gw as Socket & {
      _write: (...a: unknown[]) => void;
      _writev: (chunks: unknown[], cb: unknown) => void;
    };
    // What the gateway leg hands the kernel: one _write or _writev is one write system call.
    const calls = { write: 0, writev: 0, chunks: 0 };
    const write = gw._write.bind(gw);
    const writev = gw._writev.bind(gw);
    gw._write = (...a) => {
      calls.write++;
      calls.chunks++;
      write(...a);
    };
    gw._writev = (chunks, cb) => {
      calls.writev++;
      calls.chunks += chunks.length;
      writev(chunks, cb);
    };
    let arrived = res.early.length;
    res.socket.on("data", (c: Buffer) => (arrived += c.length));
    res.socket.resume();
    // One frame at a time, each read by the customer before the next goes: nothing queues on the
    // gateway leg, so any joining of parts is the relay's own. A frame sent alone starts a read, so
    // it is made longer than one (64 KiB) to arrive in parts, as frames in a stream do.
    const frames = 12;
    const payload = Buffer.alloc(96 * 1024, 7);
    for (let i = 1; i <= frames; i++) {
      peer.ws.send(encodeFrame(FRAME_DATA, sid, payload));
      await waitUntil(async () => arrived === i * payload.length, 5_000, `frame ${i} to reach the customer`);
    }
    console.log(`[measure] ${frames} frames of 96 KiB to the gateway leg: ${JSON.stringify(calls)}`);
    expect(calls.chunks).toBeGreaterThan(frames); // the frames did arrive in parts
    expect(calls.write + calls.writev).toBe(frames);
    res.socket.destroy();
    peer.close();
  });

  it("flow-v1: a peer that sends past its window loses the session and the customer socket is cut", async () => {
    const { peer, sid, res } = await openManual();
    const errorsBefore = t.relay.state.metrics.frameErrors;
    peer.ws.send(encodeFrame(FRAME_DATA, sid, new Uint8Array(INITIAL_WINDOW + 1)));
    await new Promise<void>((resolve) => {
      res.socket.on("close", () => resolve());
      res.socket.resume();
    });
    expect(t.relay.state.sessions.has(sid)).toBe(false);
    expect(t.relay.state.metrics.frameErrors).toBe(errorsBefore + 1);
    peer.close();
  });
});
