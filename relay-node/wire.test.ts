// The relay's peer-facing WebSocket wire (RFC 6455, server side; wire.ts), pinned over raw TCP: no
// WebSocket library on this side. Written against the `ws` package the relay used before wire.ts
// and kept green across the change, so the bytes public peer clients see did not change. Where `ws`
// did something RFC 6455 leaves open or words differently, the relay still does it, and a comment
// says so; the one deliberate change is the 64-bit length with its top bit set (1002, not 1009).
import { createHash, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_FRAME_BYTES } from "../shared/frame.ts";
import { signJwt } from "../shared/jwt.ts";
import { logMessages } from "../shared/log.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";
import { acceptWebSocket, CLOSE_TIMEOUT_MS, type WireHandler, type WireSocket } from "./wire.ts";

let t: TestRelay;

beforeAll(async () => {
  t = await startTestRelay();
});

afterAll(async () => {
  await t?.close();
});

// ---------------------------------------------------------------------------------------------
// A raw RFC 6455 client: HTTP upgrade by hand, frames encoded and decoded here.

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;
const HEARTBEAT = JSON.stringify({ type: "heartbeat", payload: {} });
const HEARTBEAT_ACK = JSON.stringify({ type: "heartbeat_ack", payload: {} });
/** How long a reply may take: generous, the relay answers in milliseconds. */
const WAIT_MS = 5_000;

interface Frame {
  fin: boolean;
  /** RSV1-3 as a 3-bit number (RSV1 = 4). */
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

interface HttpHead {
  statusLine: string;
  status: number;
  /** Lower-cased names; a repeated header keeps its last value. */
  headers: Record<string, string>;
}

interface FrameOptions {
  /** FIN bit (default true). */
  fin?: boolean;
  /** RSV bits as a 3-bit number (RSV1 = 4). */
  rsv?: number;
  /** Client frames must be masked (default true); false sends the payload in the clear. */
  masked?: boolean;
  /** Force a length encoding: 7 (in the second byte), 16 (126 + u16) or 64 (127 + u64). */
  lengthBits?: 7 | 16 | 64;
  /** Announce this length instead of the payload's (to send a header without its body). */
  announce?: number;
}

function acceptFor(key: string): string {
  return createHash("sha1")
    .update(key + WS_GUID)
    .digest("base64");
}

function xorMask(data: Buffer, key: Buffer): Buffer {
  const out = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data.readUInt8(i) ^ key.readUInt8(i % 4);
  return out;
}

/** One client frame, masked with a fresh random key unless told otherwise. */
function encodeFrame(
  opcode: number,
  payload: Buffer | string = Buffer.alloc(0),
  o: FrameOptions = {},
): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : payload;
  const length = o.announce ?? body.length;
  const bits = o.lengthBits ?? (length < 126 ? 7 : length < 0x10000 ? 16 : 64);
  const masked = o.masked ?? true;
  const head = Buffer.alloc(bits === 7 ? 2 : bits === 16 ? 4 : 10);
  head[0] = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (bits === 7) head[1] = maskBit | length;
  else if (bits === 16) {
    head[1] = maskBit | 126;
    head.writeUInt16BE(length, 2);
  } else {
    head[1] = maskBit | 127;
    head.writeBigUInt64BE(BigInt(length), 2);
  }
  if (!masked) return Buffer.concat([head, body]);
  const key = randomBytes(4);
  return Buffer.concat([head, key, xorMask(body, key)]);
}

/** One frame from the front of `buf`, or undefined while it is incomplete. */
function decodeFrame(buf: Buffer): { frame: Frame; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const b0 = buf.readUInt8(0);
  const b1 = buf.readUInt8(1);
  let length = b1 & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buf.length < 4) return undefined;
    length = buf.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buf.length < 10) return undefined;
    length = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (b1 & 0x80) !== 0;
  // A server must not mask; decode a masked frame anyway so the test can say so instead of hanging.
  const key = masked ? buf.subarray(offset, offset + 4) : undefined;
  if (masked) offset += 4;
  if (buf.length < offset + length) return undefined;
  const raw = Buffer.from(buf.subarray(offset, offset + length));
  const payload = key ? xorMask(raw, key) : raw;
  const frame = { fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, masked, payload };
  return { frame, size: offset + length };
}

function parseHead(text: string): HttpHead {
  const [statusLine = "", ...lines] = text.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { statusLine, status: Number(statusLine.split(" ")[1]), headers };
}

function closePayload(code: number, reason: Buffer | string = ""): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(code);
  return Buffer.concat([head, typeof reason === "string" ? Buffer.from(reason) : reason]);
}

function parseClose(frame: Frame): { code: number | undefined; reason: string } {
  if (frame.payload.length < 2) return { code: undefined, reason: "" };
  return { code: frame.payload.readUInt16BE(0), reason: frame.payload.subarray(2).toString("utf8") };
}

/** One TCP connection to the relay's public port, speaking HTTP until the head and frames after. */
class RawClient {
  head: HttpHead | undefined;
  /** The bytes after the head of a non-101 response (its body). */
  body = Buffer.alloc(0);
  /** Every frame the server sent, in order. */
  readonly frames: Frame[] = [];
  /** The server sent FIN (or the connection was reset). */
  readonly ended: Promise<void>;
  /** The TCP connection is gone both ways. */
  readonly closed: Promise<void>;
  error: Error | undefined;
  private buf = Buffer.alloc(0);
  private readonly unread: Frame[] = [];
  private readonly waiters = new Set<() => void>();

  readonly socket: Socket;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on("error", (err) => {
      this.error = err;
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.ended = new Promise((resolve) => {
      socket.once("end", resolve);
      socket.once("close", resolve);
    });
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
  }

  private onData(chunk: Buffer) {
    this.buf = Buffer.concat([this.buf, chunk]);
    if (!this.head) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      this.head = parseHead(this.buf.subarray(0, end).toString("latin1"));
      this.buf = this.buf.subarray(end + 4);
    }
    if (this.head.status !== 101) {
      this.body = Buffer.concat([this.body, this.buf]);
      this.buf = Buffer.alloc(0);
    } else {
      for (let d = decodeFrame(this.buf); d; d = decodeFrame(this.buf)) {
        this.frames.push(d.frame);
        this.unread.push(d.frame);
        this.buf = this.buf.subarray(d.size);
      }
    }
    for (const wake of this.waiters) wake();
  }

  /** Resolves with `check`'s first defined answer, re-asked on every arrival. */
  waitFor<T>(check: () => T | undefined, what: string, ms = WAIT_MS): Promise<T> {
    return new Promise((resolve, reject) => {
      const wake = () => {
        const found = check();
        if (found === undefined) return;
        this.waiters.delete(wake);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.add(wake);
      wake();
    });
  }

  /** The next frame of `opcode` not yet taken (frames of other opcodes stay for later). */
  next(opcode: number, ms = WAIT_MS): Promise<Frame> {
    return this.waitFor(
      () => {
        const i = this.unread.findIndex((f) => f.opcode === opcode);
        return i < 0 ? undefined : this.unread.splice(i, 1)[0];
      },
      `a frame with opcode ${opcode}`,
      ms,
    );
  }

  /** The next text frame, as a string. */
  async nextText(ms = WAIT_MS): Promise<string> {
    return (await this.next(OP.text, ms)).payload.toString("utf8");
  }

  /** The next text frame whose JSON `type` is `type`. */
  nextMessage(type: string, ms = WAIT_MS): Promise<{ type: string; payload: unknown }> {
    return this.waitFor(
      () => {
        const i = this.unread.findIndex(
          (f) => f.opcode === OP.text && JSON.parse(f.payload.toString("utf8")).type === type,
        );
        if (i < 0) return undefined;
        return JSON.parse(this.unread.splice(i, 1)[0]!.payload.toString("utf8"));
      },
      `a "${type}" message`,
      ms,
    );
  }

  headReceived(ms = WAIT_MS): Promise<HttpHead> {
    return this.waitFor(() => this.head, "the HTTP response head", ms);
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  sendFrame(opcode: number, payload?: Buffer | string, o?: FrameOptions): void {
    this.send(encodeFrame(opcode, payload, o));
  }

  /** Resolves once the server has ended its side of the TCP connection, failing after `ms`. */
  async serverEnded(ms = WAIT_MS): Promise<void> {
    await withTimeout(this.ended, ms, "the server to end the TCP connection");
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP connection to the relay's public port. */
async function openTcp(to = t.relay.wsUrl): Promise<RawClient> {
  const url = new URL(to);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return new RawClient(socket);
}

interface UpgradeOptions {
  /** Where to (default: the test relay's public port). */
  url?: string;
  key?: string | null;
  version?: string | null;
  /** The Sec-WebSocket-Protocol value (null: none). */
  protocol?: string | null;
  method?: string;
  upgrade?: string | null;
  connection?: string | null;
  extra?: string[];
}

/** The upgrade request's text; a null option leaves its header out. */
function upgradeRequest(o: UpgradeOptions): string {
  const url = new URL(o.url ?? t.relay.wsUrl);
  const lines = [`${o.method ?? "GET"} / HTTP/1.1`, `Host: ${url.host}`];
  const add = (name: string, value: string | null | undefined) => {
    if (value !== null && value !== undefined) lines.push(`${name}: ${value}`);
  };
  add("Upgrade", o.upgrade === undefined ? "websocket" : o.upgrade);
  add("Connection", o.connection === undefined ? "Upgrade" : o.connection);
  add("Sec-WebSocket-Key", o.key);
  add("Sec-WebSocket-Version", o.version === undefined ? "13" : o.version);
  add("Sec-WebSocket-Protocol", o.protocol);
  lines.push(...(o.extra ?? []));
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Sends an upgrade request (a fresh random key unless given) and waits for the response head. */
async function upgrade(o: UpgradeOptions = {}): Promise<{ client: RawClient; key: string; head: HttpHead }> {
  const key = o.key ?? randomBytes(16).toString("base64");
  const client = await openTcp(o.url);
  client.socket.write(upgradeRequest({ ...o, key: o.key === null ? null : key }));
  const head = await client.headReceived();
  return { client, key, head };
}

/** A device with a valid token, upgraded and past its `connected` message. */
async function connectDevice(): Promise<{ client: RawClient; id: string; token: string; head: HttpHead }> {
  const id = t.newDeviceId();
  const token = await t.token(id);
  const { client, key, head } = await upgrade({ protocol: `token.${token}` });
  expect(head.status).toBe(101);
  expect(head.headers["sec-websocket-accept"]).toBe(acceptFor(key));
  await client.nextMessage("connected");
  return { client, id, token, head };
}

/** The server's close frame carries `code`, and then the server ends the TCP connection. */
async function expectClosedWith(client: RawClient, code: number): Promise<Frame> {
  const frame = await client.next(OP.close);
  expect(parseClose(frame).code).toBe(code);
  await client.serverEnded();
  return frame;
}

function expectServerFrameBits(frame: Frame) {
  expect({ masked: frame.masked, fin: frame.fin, rsv: frame.rsv }).toEqual({
    masked: false,
    fin: true,
    rsv: 0,
  });
}

/** `text` cut into `parts` pieces of bytes (not characters: a piece may end inside one). */
function splitBytes(text: string | Buffer, parts: number): Buffer[] {
  const bytes = typeof text === "string" ? Buffer.from(text) : text;
  const size = Math.ceil(bytes.length / parts);
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

/** A message sent as fragments: first with `opcode`, the rest as continuations, FIN on the last. */
function fragments(opcode: number, pieces: Buffer[]): Buffer[] {
  return pieces.map((p, i) =>
    encodeFrame(i === 0 ? opcode : OP.continuation, p, { fin: i === pieces.length - 1 }),
  );
}

// ---------------------------------------------------------------------------------------------

describe("relay wire: opening handshake", () => {
  it("answers 101 with the right Sec-WebSocket-Accept, Upgrade: websocket and the token subprotocol, then sends connected", async () => {
    const id = t.newDeviceId();
    const token = await t.token(id);
    const { client, key, head } = await upgrade({ protocol: `token.${token}` });
    expect(head.statusLine).toBe("HTTP/1.1 101 Switching Protocols");
    expect(head.headers["sec-websocket-accept"]).toBe(acceptFor(key));
    expect(head.headers.upgrade?.toLowerCase()).toBe("websocket");
    expect(head.headers.connection?.toLowerCase()).toBe("upgrade");
    expect(head.headers["sec-websocket-protocol"]).toBe(`token.${token}`);
    // No extension is negotiated (perMessageDeflate is off), so RSV1 never means anything.
    expect(head.headers["sec-websocket-extensions"]).toBeUndefined();
    // The first message is `connected`: the first frame of all, a text frame.
    const first = await client.next(OP.text);
    expect(client.frames[0]).toBe(first);
    const msg = JSON.parse(first.payload.toString("utf8"));
    expect(msg).toEqual({
      type: "connected",
      payload: { deviceId: id, ip: "127.0.0.1", relayId: t.relay.relayId },
    });
    client.socket.destroy();
  });

  it("does not negotiate permessage-deflate when a client offers it", async () => {
    const token = await t.token(t.newDeviceId());
    const { client, head } = await upgrade({
      protocol: `token.${token}`,
      extra: ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    });
    expect(head.status).toBe(101);
    expect(head.headers["sec-websocket-extensions"]).toBeUndefined();
    await client.nextMessage("connected");
    client.socket.destroy();
  });

  it("accepts Sec-WebSocket-Version: 8 as well as 13", async () => {
    // Like `ws`, the relay still speaks hybi-08 (version 8) besides RFC 6455's 13; RFC 6455 only names 13.
    const token = await t.token(t.newDeviceId());
    const { client, key, head } = await upgrade({ protocol: `token.${token}`, version: "8" });
    expect(head.status).toBe(101);
    expect(head.headers["sec-websocket-accept"]).toBe(acceptFor(key));
    await client.nextMessage("connected");
    client.socket.destroy();
  });

  it("completes the handshake for a bad token and then closes: 4001 without a token, 4002 with a forged one", async () => {
    // No token offered: a 101 without Sec-WebSocket-Protocol (nothing to echo), then close 4001.
    const bare = await upgrade({ protocol: null });
    expect(bare.head.status).toBe(101);
    expect(bare.head.headers["sec-websocket-protocol"]).toBeUndefined();
    expect(parseClose(await bare.client.next(OP.close))).toEqual({ code: 4001, reason: "no_token" });
    // A token signed with another secret: echoed (so the client accepts the 101), then close 4002.
    const now = Math.floor(Date.now() / 1000);
    const forged = await signJwt(
      { sub: t.newDeviceId(), acct: "a", kind: "peer", gen: 1, iat: now, exp: now + 60 },
      "some-other-secret-0000",
    );
    const bad = await upgrade({ protocol: `token.${forged}` });
    expect(bad.head.status).toBe(101);
    expect(bad.head.headers["sec-websocket-protocol"]).toBe(`token.${forged}`);
    expect(parseClose(await bad.client.next(OP.close))).toEqual({ code: 4002, reason: "signature" });
    // The refused socket waits for the client's close frame, then ends the TCP connection.
    bad.client.sendFrame(OP.close, closePayload(4002));
    await bad.client.serverEnded();
    bare.client.socket.destroy();
  });
});

describe("relay wire: bad handshakes get an HTTP error, no 101, and a closed connection", () => {
  /** Sends the request `o` describes; resolves with the response once the server has ended the connection. */
  async function refused(o: UpgradeOptions) {
    const { client, head } = await upgrade(o);
    await client.serverEnded();
    expect(head.status).not.toBe(101);
    return { head, body: client.body.toString("utf8") };
  }

  it("answers a missing Sec-WebSocket-Key with 400", async () => {
    const token = await t.token(t.newDeviceId());
    const { head, body } = await refused({ key: null, protocol: `token.${token}` });
    expect(head.status).toBe(400);
    expect(head.headers.connection).toBe("close");
    expect(body).toBe("Missing or invalid Sec-WebSocket-Key header");
  });

  it("answers a Sec-WebSocket-Key that is not 16 bytes in base64 with 400", async () => {
    const token = await t.token(t.newDeviceId());
    const { head } = await refused({ key: "c2hvcnQ=", protocol: `token.${token}` });
    expect(head.status).toBe(400);
  });

  it("answers Sec-WebSocket-Version: 12 with 400 naming the versions it speaks", async () => {
    // RFC 6455 4.2.2 suggests 426 with Sec-WebSocket-Version; the relay answers 400 with the header, as `ws` did.
    const token = await t.token(t.newDeviceId());
    const { head, body } = await refused({ version: "12", protocol: `token.${token}` });
    expect(head.status).toBe(400);
    expect(head.headers["sec-websocket-version"]).toBe("13, 8");
    expect(body).toBe("Missing or invalid Sec-WebSocket-Version header");
  });

  it("answers a missing Sec-WebSocket-Version with 400", async () => {
    const token = await t.token(t.newDeviceId());
    const { head } = await refused({ version: null, protocol: `token.${token}` });
    expect(head.status).toBe(400);
    expect(head.headers["sec-websocket-version"]).toBe("13, 8");
  });

  it("answers an Upgrade other than websocket (with Connection: Upgrade) with 400", async () => {
    const token = await t.token(t.newDeviceId());
    const { head, body } = await refused({ upgrade: "h2c", protocol: `token.${token}` });
    expect(head.status).toBe(400);
    expect(body).toBe("Invalid Upgrade header");
  });

  it("answers an upgrade with a method other than GET with 405", async () => {
    const token = await t.token(t.newDeviceId());
    const { head } = await refused({
      method: "POST",
      protocol: `token.${token}`,
      extra: ["Content-Length: 0"],
    });
    expect(head.status).toBe(405);
  });

  it("answers a plain GET without Upgrade with 426 (relay.ts)", async () => {
    // Connection: close, or Node's HTTP server keeps the connection alive for the next request.
    const { head, body } = await refused({ upgrade: null, connection: "close", key: null, version: null });
    expect(head.status).toBe(426);
    expect(head.headers.upgrade).toBe("websocket");
    // Node's HTTP server sends the body chunked (relay.ts gives no Content-Length).
    expect(head.headers["transfer-encoding"]).toBe("chunked");
    expect(body).toContain("peerproxy relay: WebSocket only\n");
  });

  it("answers Upgrade: websocket without Connection: Upgrade with 426 (Node sees no upgrade)", async () => {
    const token = await t.token(t.newDeviceId());
    const { head } = await refused({ connection: "close", protocol: `token.${token}` });
    expect(head.status).toBe(426);
  });
});

describe("relay wire: server frames", () => {
  it("are unmasked, FIN set, RSV 0 (text, pong and close)", async () => {
    const { client } = await connectDevice();
    const connected = client.frames[0]!;
    client.sendFrame(OP.text, HEARTBEAT);
    const ack = await client.next(OP.text);
    client.sendFrame(OP.ping, "are you there");
    const pong = await client.next(OP.pong);
    client.sendFrame(OP.close, closePayload(1000));
    const close = await client.next(OP.close);
    for (const frame of [connected, ack, pong, close]) expectServerFrameBits(frame);
    expect(ack.payload.toString()).toBe(HEARTBEAT_ACK);
    await client.serverEnded();
  });
});

describe("relay wire: messages and fragmentation", () => {
  it("acks a heartbeat sent as one masked text frame", async () => {
    const { client } = await connectDevice();
    client.sendFrame(OP.text, HEARTBEAT);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("acks a heartbeat sent in three fragments (text, continuation, final continuation)", async () => {
    const { client } = await connectDevice();
    for (const f of fragments(OP.text, splitBytes(HEARTBEAT, 3))) client.send(f);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("reassembles text whose fragments split a multi-byte UTF-8 character", async () => {
    // UTF-8 is checked on the whole message: a fragment may end inside a character (RFC 6455 5.6).
    const { client } = await connectDevice();
    const text = JSON.stringify({ type: "heartbeat", payload: { note: "\u00e9\u20ac\u{1f600}" } });
    const bytes = Buffer.from(text);
    const euro = bytes.indexOf(Buffer.from("\u20ac"));
    const pieces = [
      bytes.subarray(0, euro + 1),
      bytes.subarray(euro + 1, euro + 2),
      bytes.subarray(euro + 2),
    ];
    for (const f of fragments(OP.text, pieces)) client.send(f);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("answers a ping between fragments with a pong of the same payload and still acks the heartbeat", async () => {
    const { client } = await connectDevice();
    const [first, second, last] = fragments(OP.text, splitBytes(HEARTBEAT, 3));
    client.send(first!);
    client.sendFrame(OP.ping, "between");
    // The pong comes while the message is still open: control frames are answered as they arrive.
    const pong = await client.next(OP.pong);
    expect(pong.payload.toString()).toBe("between");
    client.send(second!);
    client.send(last!);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("acks a heartbeat whose header and payload arrive one byte per TCP write", async () => {
    const { client } = await connectDevice();
    client.socket.setNoDelay(true);
    const frame = encodeFrame(OP.text, HEARTBEAT);
    for (let i = 0; i < frame.length; i++) {
      client.send(frame.subarray(i, i + 1));
      await sleep(2);
    }
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("answers every frame of one TCP write (two heartbeats and a ping)", async () => {
    const { client } = await connectDevice();
    client.send(
      Buffer.concat([
        encodeFrame(OP.text, HEARTBEAT),
        encodeFrame(OP.ping, "in the middle"),
        encodeFrame(OP.text, HEARTBEAT),
      ]),
    );
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    expect((await client.next(OP.pong)).payload.toString()).toBe("in the middle");
    client.socket.destroy();
  });

  it("answers a ping with the largest control payload (125 bytes) with the identical pong", async () => {
    const { client } = await connectDevice();
    const payload = randomBytes(125);
    client.sendFrame(OP.ping, payload);
    const pong = await client.next(OP.pong);
    expect(pong.payload.equals(payload)).toBe(true);
    expectServerFrameBits(pong);
    client.socket.destroy();
  });

  it("answers an empty ping with an empty pong", async () => {
    const { client } = await connectDevice();
    client.sendFrame(OP.ping);
    expect((await client.next(OP.pong)).payload.length).toBe(0);
    client.socket.destroy();
  });

  it("acks a 300-byte heartbeat (16-bit length) whose payload carries an unknown field", async () => {
    // receiveFromPeer drops fields it does not know (zod objects strip), so the padding is harmless.
    const { client } = await connectDevice();
    const base = JSON.stringify({ type: "heartbeat", payload: { pad: "" } });
    const text = JSON.stringify({ type: "heartbeat", payload: { pad: "x".repeat(300 - base.length) } });
    expect(Buffer.byteLength(text)).toBe(300);
    const frame = encodeFrame(OP.text, text);
    expect(frame.readUInt8(1) & 0x7f).toBe(126);
    client.send(frame);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("accepts a small frame whose length uses the 64-bit form (and a 16-bit form under 126)", async () => {
    // RFC 6455 5.2 says the minimal length encoding MUST be used; neither `ws` nor the relay enforce it on receipt.
    const { client } = await connectDevice();
    client.sendFrame(OP.text, HEARTBEAT, { lengthBits: 64 });
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.sendFrame(OP.text, HEARTBEAT, { lengthBits: 16 });
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });

  it("accepts a masked frame whose mask key is all zero", async () => {
    const { client } = await connectDevice();
    const frame = encodeFrame(OP.text, HEARTBEAT, { masked: false });
    // The same frame with the mask bit set and a zero key: the payload is unchanged by XOR.
    const zeroKeyed = Buffer.concat([frame.subarray(0, 2), Buffer.alloc(4), frame.subarray(2)]);
    zeroKeyed[1] = zeroKeyed.readUInt8(1) | 0x80;
    client.send(zeroKeyed);
    expect(await client.nextText()).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });
});

describe("relay wire: protocol errors close with the right code, then the TCP connection ends", () => {
  /** Each case: what the client sends right after `connected`, and the code the server closes with. */
  const cases: { name: string; frames: () => Buffer[]; code: number }[] = [
    {
      name: "an unmasked client frame",
      frames: () => [encodeFrame(OP.text, HEARTBEAT, { masked: false })],
      code: 1002,
    },
    {
      name: "RSV1 set (no extension negotiated)",
      frames: () => [encodeFrame(OP.text, HEARTBEAT, { rsv: 4 })],
      code: 1002,
    },
    { name: "RSV2 set", frames: () => [encodeFrame(OP.text, HEARTBEAT, { rsv: 2 })], code: 1002 },
    { name: "RSV3 set", frames: () => [encodeFrame(OP.text, HEARTBEAT, { rsv: 1 })], code: 1002 },
    { name: "the reserved data opcode 3", frames: () => [encodeFrame(0x3, "x")], code: 1002 },
    { name: "the reserved control opcode 0xB", frames: () => [encodeFrame(0xb, "x")], code: 1002 },
    {
      name: "a continuation with no message started",
      frames: () => [encodeFrame(OP.continuation, "x")],
      code: 1002,
    },
    {
      name: "a new text frame while a fragmented message is open",
      frames: () => [encodeFrame(OP.text, '{"type":', { fin: false }), encodeFrame(OP.text, HEARTBEAT)],
      code: 1002,
    },
    { name: "a ping with FIN clear", frames: () => [encodeFrame(OP.ping, "x", { fin: false })], code: 1002 },
    {
      name: "a ping with a 126-byte payload",
      frames: () => [encodeFrame(OP.ping, randomBytes(126))],
      code: 1002,
    },
    {
      name: "invalid UTF-8 in a text frame",
      frames: () => [encodeFrame(OP.text, Buffer.from([0x22, 0xff, 0xfe, 0x22]))],
      code: 1007,
    },
    {
      // A character cut short by the end of the message (0xe2 0x82 needs a third byte).
      name: "invalid UTF-8 across the fragments of a text message",
      frames: () => fragments(OP.text, [Buffer.from([0x22, 0xe2, 0x82]), Buffer.from([0x22])]),
      code: 1007,
    },
  ];

  it.each(cases)("$name -> $code", async ({ frames, code }) => {
    const { client } = await connectDevice();
    client.send(Buffer.concat(frames()));
    const close = await expectClosedWith(client, code);
    // The code alone, no reason.
    expect(close.payload.length).toBe(2);
    expectServerFrameBits(close);
  });

  it("a 64-bit length with its most significant bit set -> 1002", async () => {
    // RFC 6455 5.2: that bit MUST be 0, so a protocol error. (`ws`, which the relay used before
    // wire.ts, answered 1009 as for any length it could not handle.)
    const { client } = await connectDevice();
    const frame = encodeFrame(OP.binary, Buffer.alloc(0), { lengthBits: 64 });
    frame.writeUInt32BE(0x8000_0000, 2);
    client.send(frame);
    await expectClosedWith(client, 1002);
  });

  /** The relay counts an oversized message as a frame error and logs it (peers.ts peerHandler). */
  async function expectTooBig(send: (client: RawClient) => void) {
    const { client, id } = await connectDevice();
    const errorsBefore = t.relay.state.metrics.frameErrors;
    send(client);
    await expectClosedWith(client, 1009);
    expect(t.relay.state.metrics.frameErrors).toBe(errorsBefore + 1);
    const warned = t.logs.filter((l) => l.includes(id) && logMessages([l])[0] === "peer frame_too_large");
    expect(warned).toHaveLength(1);
  }

  it("a binary frame header announcing MAX_FRAME_BYTES + 1 -> 1009 before any of its body", async () => {
    await expectTooBig((client) =>
      client.sendFrame(OP.binary, Buffer.alloc(0), { announce: MAX_FRAME_BYTES + 1 }),
    );
  });

  it("a fragmented message whose fragments together exceed MAX_FRAME_BYTES -> 1009", async () => {
    // Each fragment alone is under the limit: the sum is what counts (maxPayload is per message).
    const first = Math.floor(MAX_FRAME_BYTES * 0.75);
    const second = MAX_FRAME_BYTES - first + 1;
    await expectTooBig((client) => {
      client.send(encodeFrame(OP.binary, Buffer.alloc(first, 0x61), { fin: false }));
      client.send(encodeFrame(OP.continuation, Buffer.alloc(second, 0x62)));
    });
  });

  it("a message of exactly MAX_FRAME_BYTES in fragments is accepted (the limit is inclusive)", async () => {
    // A text message of MAX_FRAME_BYTES: a heartbeat padded to the byte, split in two fragments.
    const { client } = await connectDevice();
    const base = JSON.stringify({ type: "heartbeat", payload: { pad: "" } });
    const text = JSON.stringify({
      type: "heartbeat",
      payload: { pad: "y".repeat(MAX_FRAME_BYTES - base.length) },
    });
    expect(Buffer.byteLength(text)).toBe(MAX_FRAME_BYTES);
    for (const f of fragments(OP.text, splitBytes(text, 2))) client.send(f);
    expect(await client.nextText(20_000)).toBe(HEARTBEAT_ACK);
    client.socket.destroy();
  });
});

describe("relay wire: closing handshake", () => {
  /** Sends a close frame with `payload` and returns the server's answering close frame. */
  async function closeWith(
    payload: Buffer,
  ): Promise<{ code: number | undefined; reason: string; frame: Frame }> {
    const { client } = await connectDevice();
    client.sendFrame(OP.close, payload);
    const frame = await client.next(OP.close);
    await client.serverEnded();
    return { ...parseClose(frame), frame };
  }

  it("answers close 1000 'bye' with close 1000 (reason echoed) and ends the TCP connection", async () => {
    const { code, reason, frame } = await closeWith(closePayload(1000, "bye"));
    // RFC 6455 5.5.1 asks for the status code echoed; the relay echoes the reason too, as `ws` did.
    expect({ code, reason }).toEqual({ code: 1000, reason: "bye" });
    expectServerFrameBits(frame);
  });

  it("answers a close without payload with a close without payload", async () => {
    // No status code received (1005 on this side): the relay answers with an empty close frame.
    const { frame } = await closeWith(Buffer.alloc(0));
    expect(frame.payload.length).toBe(0);
  });

  it("answers a close with a 1-byte payload with 1002", async () => {
    const { code } = await closeWith(Buffer.from([0x03]));
    expect(code).toBe(1002);
  });

  it.each([999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000])(
    "answers a close with the invalid code %i with 1002",
    async (sent) => {
      const { code, frame } = await closeWith(closePayload(sent, "x"));
      expect(code).toBe(1002);
      expect(frame.payload.length).toBe(2);
    },
  );

  it.each([1001, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999])(
    "echoes a close with the valid code %i and its reason",
    async (sent) => {
      // 1012-1014 are IANA-registered after RFC 6455; the relay accepts (and echoes) them, as `ws` did.
      const { code, reason } = await closeWith(closePayload(sent, "fine reason \u00e9"));
      expect({ code, reason }).toEqual({ code: sent, reason: "fine reason \u00e9" });
    },
  );

  it("answers a close whose reason is invalid UTF-8 with 1007", async () => {
    const { code } = await closeWith(closePayload(1000, Buffer.from([0x62, 0xff, 0x65])));
    expect(code).toBe(1007);
  });

  it("answers a close with a 126-byte payload (too long for a control frame) with 1002", async () => {
    const { code } = await closeWith(closePayload(1000, "r".repeat(124)));
    expect(code).toBe(1002);
  });

  it("ignores frames after the client's close frame", async () => {
    const { client } = await connectDevice();
    client.send(Buffer.concat([encodeFrame(OP.close, closePayload(1000)), encodeFrame(OP.text, HEARTBEAT)]));
    expect(parseClose(await client.next(OP.close)).code).toBe(1000);
    await client.serverEnded();
    expect(client.frames.map((f) => f.opcode)).toEqual([OP.text, OP.close]);
  });
});

describe("relay wire: the TCP connection going away", () => {
  it("forgets a device whose client destroys the TCP connection without a close frame", async () => {
    const { client, id } = await connectDevice();
    expect(t.relay.state.devices.has(id)).toBe(true);
    client.socket.destroy();
    await expect.poll(() => t.relay.state.devices.has(id), { timeout: 2_000 }).toBe(false);
  });

  it("ends its side of a half-closed connection (client FIN, no close frame) without a close frame", async () => {
    const { client, id } = await connectDevice();
    client.socket.end();
    await client.serverEnded(3_000);
    await withTimeout(client.closed, 3_000, "the connection to close");
    // The relay answers a bare FIN with its own FIN, no close frame (there is no one left to read it).
    expect(client.frames.map((f) => f.opcode)).toEqual([OP.text]);
    await expect.poll(() => t.relay.state.devices.has(id), { timeout: 2_000 }).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// wire.ts on its own: what the relay's tests above cannot see from outside.

/** An HTTP server whose upgrades go straight to acceptWebSocket, recording what its handler hears. */
async function startWireServer(opts: { parts?: boolean } = {}) {
  const messages: { data: Buffer; isBinary: boolean; parts?: number }[] = [];
  const closes: number[] = [];
  /** each socket's close code: other tests' connections may close meanwhile (their close timeouts) */
  const closeOf = new Map<WireSocket<undefined>, number>();
  const sockets: WireSocket<undefined>[] = [];
  const handler: WireHandler<undefined> = {
    // The payload may be a view of the socket's read buffer: keep a copy, as a consumer that holds it must.
    message: (_ws, data, isBinary) => messages.push({ data: Buffer.from(data), isBinary }),
    ...(opts.parts
      ? {
          binaryParts: (_ws: WireSocket<undefined>, parts: Buffer[]) =>
            messages.push({ data: Buffer.concat(parts), isBinary: true, parts: parts.length }),
        }
      : {}),
    alive: () => {},
    error: () => {},
    close: (ws, code) => {
      closes.push(code);
      closeOf.set(ws, code);
    },
  };
  const server = createServer((_req, res) => res.end());
  server.on("upgrade", (req, socket, head) => {
    const ws = acceptWebSocket(req, socket, head, {
      protocol: undefined,
      handler,
      maxPayload: 2 * 1024 * 1024,
    });
    if (ws) sockets.push(ws);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const open = async () => {
    const { client, head } = await upgrade({ url });
    expect(head.status).toBe(101);
    await expect.poll(() => sockets.length).toBeGreaterThan(0);
    return { client, ws: sockets.at(-1)! };
  };
  const close = () => {
    for (const ws of sockets) ws.terminate();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { url, messages, closes, closeOf, open, close };
}

describe("wire.ts on its own", () => {
  let w: Awaited<ReturnType<typeof startWireServer>>;
  beforeAll(async () => {
    w = await startWireServer();
  });
  afterAll(() => w?.close());

  it("reassembles a 1 MiB binary message written in 997-byte pieces, byte for byte", async () => {
    const { client } = await open();
    const body = randomBytes(1024 * 1024);
    const frame = encodeFrame(OP.binary, body);
    const before = w.messages.length;
    for (let off = 0; off < frame.length; off += 997) client.send(frame.subarray(off, off + 997));
    await expect.poll(() => w.messages.length, { timeout: WAIT_MS }).toBe(before + 1);
    const got = w.messages.at(-1)!;
    expect(got.isBinary).toBe(true);
    expect(got.data.equals(body)).toBe(true);
  });

  it("writes the frames of one tick in one system call once a small one corked it, in order; a large frame alone goes at once", async () => {
    const { client, ws } = await w.open();
    // What the socket hands its handle: one entry per write system call (chunks in it).
    const writes: number[] = [];
    const sock = ws.socket as Socket & {
      _write(c: Buffer, e: string, cb: () => void): void;
      _writev(c: { chunk: Buffer }[], cb: () => void): void;
    };
    const { _write, _writev } = sock;
    sock._write = (c, e, cb) => {
      writes.push(1);
      _write.call(sock, c, e, cb);
    };
    sock._writev = (c, cb) => {
      writes.push(c.length);
      _writev.call(sock, c, cb);
    };
    const large = randomBytes(64 * 1024);
    ws.send(Buffer.from([1]));
    ws.send("two");
    ws.send(Buffer.from([3, 3, 3]));
    ws.send(large); // head and payload, behind the small ones
    expect(writes).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([5]);
    expect((await client.next(OP.binary)).payload).toEqual(Buffer.from([1]));
    expect(await client.nextText()).toBe("two");
    expect((await client.next(OP.binary)).payload).toEqual(Buffer.from([3, 3, 3]));
    expect((await client.next(OP.binary)).payload.equals(large)).toBe(true);
    ws.send(large);
    expect(writes).toEqual([5, 2]);
    // On its own in a later tick, a small frame still leaves by the end of that tick.
    ws.send("alone");
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([5, 2, 1]);
    expect((await client.next(OP.binary)).payload.equals(large)).toBe(true);
    expect(await client.nextText()).toBe("alone");
  });

  it("unmasks frames that span reads straight from the reads: every size around the cut-over, fragments, and frames after them in the same read", async () => {
    // Large frames spread over several reads are unmasked from the reads into one buffer (gather),
    // the key running on across reads; small ones and those with a split header are joined first.
    await spanningFrames(w);
  });

  it("hands a large binary message that spans reads to binaryParts, unmasked in place: the same bytes, in several parts", async () => {
    const parts = await startWireServer({ parts: true });
    try {
      await spanningFrames(parts);
      // the 200,001-byte message came in parts; fragmented messages and small ones still as one
      expect(parts.messages.some((m) => (m.parts ?? 0) > 1)).toBe(true);
      expect(parts.messages.filter((m) => m.data.length < 4096).every((m) => m.parts === undefined)).toBe(
        true,
      );
      expect(parts.messages.find((m) => m.data.length === 50_001 + 8 + 60_003)?.parts).toBeUndefined();
    } finally {
      await parts.close();
    }
  });

  /** Frames of every size around the cut-over, a fragmented message and frames after them, cut at odd offsets. */
  async function spanningFrames(w: Awaited<ReturnType<typeof startWireServer>>) {
    const { client } = await w.open();
    const sizes = [4095, 4096, 4097, 65_536 + 50, 200_001, 3, 70_000, 1];
    const bodies = sizes.map((n) => randomBytes(n));
    const frag = [randomBytes(50_001), randomBytes(8), randomBytes(60_003)];
    const stream = Buffer.concat([
      ...bodies.map((b) => encodeFrame(OP.binary, b)),
      encodeFrame(OP.binary, frag[0], { fin: false }),
      encodeFrame(OP.continuation, frag[1], { fin: false }),
      encodeFrame(OP.continuation, frag[2]),
      encodeFrame(OP.binary, bodies[0]!),
    ]);
    const expected = [...bodies, Buffer.concat(frag), bodies[0]!];
    const before = w.messages.length;
    // Pieces of odd sizes, each its own read: cuts land inside headers, keys and payloads alike.
    for (let off = 0, i = 0; off < stream.length; i++) {
      const n = [7919, 13, 30_011, 1, 65_537][i % 5]!;
      client.send(stream.subarray(off, off + n));
      off += n;
      await new Promise((r) => setTimeout(r, 1));
    }
    await expect.poll(() => w.messages.length, { timeout: WAIT_MS }).toBe(before + expected.length);
    const got = w.messages.slice(before);
    expect(got.map((m) => m.data.length)).toEqual(expected.map((b) => b.length));
    expect(expected.map((b, i) => got[i]!.data.equals(b))).toEqual(expected.map(() => true));
  }

  it("sends every length encoding and both write paths (one copy below 8 KiB, writev above) intact and in order, with and without a separate head", async () => {
    const { client, ws } = await open();
    const sizes = [0, 1, 125, 126, 8191, 8192, 65535, 65536, 300_000];
    const bodies = sizes.map((n) => randomBytes(n));
    for (const b of bodies) ws.send(b);
    // sendBinary: a tunnel frame's few header bytes, then the body uncopied.
    const head = Buffer.from([1, 3, 0x61, 0x62, 0x63]);
    const twoPart = [10, 8187, 8188, 65530, 65531, 200_000].map((n) => randomBytes(n));
    for (const b of twoPart) ws.sendBinary(head, b);
    ws.send("text \u00e9");
    const expected = [...bodies, ...twoPart.map((b) => Buffer.concat([head, b])), Buffer.from("text \u00e9")];
    const got = await client.waitFor(
      () => (client.frames.length >= expected.length ? client.frames : undefined),
      `${expected.length} frames`,
    );
    expect(got.map((f) => f.payload.length)).toEqual(expected.map((b) => b.length));
    expect(expected.map((b, i) => got[i]!.payload.equals(b))).toEqual(expected.map(() => true));
    expect(got.map((f) => f.opcode)).toEqual([...expected.slice(0, -1).map(() => OP.binary), OP.text]);
    expect(got.every((f) => f.fin && !f.masked && f.rsv === 0)).toBe(true);
  });

  it("reports a send after close to its callback and writes nothing", async () => {
    const { client, ws } = await open();
    ws.close(1000, "done");
    const err = await new Promise<Error | null | undefined>((resolve) =>
      ws.send(Buffer.from("late"), resolve),
    );
    expect(err?.message).toMatch(/not open/);
    await client.next(OP.close);
    expect(client.frames.map((f) => f.opcode)).toEqual([OP.close]);
  });

  it(
    `cuts a client that never answers its close frame after CLOSE_TIMEOUT_MS (${CLOSE_TIMEOUT_MS} ms), reporting 1006`,
    async () => {
      const { client, ws } = await open();
      const started = Date.now();
      ws.close(1001, "going away");
      await client.next(OP.close);
      await withTimeout(client.closed, CLOSE_TIMEOUT_MS + 3_000, "the connection to be cut");
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(CLOSE_TIMEOUT_MS - 100);
      // This connection's report: the test before leaves one whose close timeout may fire meanwhile.
      await expect.poll(() => w.closeOf.get(ws)).toBe(1006);
    },
    CLOSE_TIMEOUT_MS + 10_000,
  );

  it("reports a connection destroyed in the middle of a frame once, with 1006, and forgets the partial frame", async () => {
    const { client, ws } = await open();
    const closesBefore = w.closes.length;
    client.send(encodeFrame(OP.binary, randomBytes(100_000)).subarray(0, 50_000));
    await sleep(100);
    client.socket.destroy();
    await expect.poll(() => ws.readyState).toBe(3);
    await sleep(100);
    expect(w.closes.slice(closesBefore)).toEqual([1006]);
  });

  async function open() {
    return w.open();
  }
});
