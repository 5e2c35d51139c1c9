// The peers' WebSocket, server side (RFC 6455), written for what a relay holds: tens of thousands
// of idle sockets and a few busy ones. One object per socket with plain fields, the socket's four
// listeners shared by every socket, and events delivered to one handler object per server: no
// stream, no EventEmitter and no closure per socket. `ws` costs ~1.5 KiB of heap per idle socket
// for its WebSocket, Receiver (a Writable stream) and Sender; this costs one object
// (bench figure 1, docs/adr/0026).
//
// What it speaks: the handshake (version 13, subprotocols), unfragmented and fragmented text and
// binary messages up to maxPayload, ping (answered), pong, and the close handshake. It negotiates no
// extension, so a frame with an RSV bit set is a protocol error. Frames it sends are unmasked, as a
// server's must be. Clients are unchanged: this is the same wire as before (relay-node/wire.test.ts
// pins it over raw TCP).
import { isUtf8 } from "node:buffer";
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";

export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;
export type ReadyState = typeof OPEN | typeof CLOSING | typeof CLOSED;

/** A peer that answers no close frame is cut this long after ours (or after a protocol error). */
export const CLOSE_TIMEOUT_MS = 5_000;

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
/** Below this a frame's header and payload go out as one buffer; above, as one writev of two. */
const COPY_BELOW = 8 * 1024;
/** RFC 7230 token characters: what a subprotocol may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const EMPTY = Buffer.alloc(0);

/** A frame or message the protocol does not allow; `status` is the close code it ends the socket with. */
export class WireError extends Error {
  readonly status: 1002 | 1007 | 1009;
  constructor(status: 1002 | 1007 | 1009, message: string) {
    super(message);
    this.status = status;
  }
}

/** What every socket of one server reports to; `this`-free so one object serves them all. */
export interface WireHandler<T> {
  message(sock: WireSocket<T>, data: Buffer, isBinary: boolean): void;
  /**
   * Optional: a binary message of one frame that arrived over several reads, unmasked where it
   * lay. `parts` in order are the message (each a view of one read); without this handler such a
   * message is copied into one buffer for `message`.
   */
  binaryParts?(sock: WireSocket<T>, parts: Buffer[]): void;
  /** A ping or a pong arrived (the ping is already answered): the peer is alive. */
  alive(sock: WireSocket<T>): void;
  /** A protocol error; the socket is already closing with err.status. */
  error(sock: WireSocket<T>, err: WireError): void;
  /** Once, when the TCP connection is gone: the peer's close code, 1005 if its close frame had none, 1006 if it sent none. */
  close(sock: WireSocket<T>, code: number): void;
}

interface Masking {
  /** XORs `payload` with `mask` in place */
  unmask(payload: Buffer, mask: Buffer): void;
  /** writes `length` bytes of `source` XOR `mask` into `output` at `offset` (a copy that unmasks) */
  mask(source: Buffer, mask: Buffer, output: Buffer, offset: number, length: number): void;
}

// `bufferutil` (the native masking `ws` uses too) when installed; byte loops otherwise.
const masking: Masking = (() => {
  try {
    return createRequire(import.meta.url)("bufferutil") as Masking;
  } catch {
    return {
      unmask(payload, mask) {
        for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      },
      mask(source, mask, output, offset, length) {
        for (let i = 0; i < length; i++) output[offset + i] = source[i]! ^ mask[i & 3]!;
      },
    };
  }
})();

/** A frame's header: what frame() checked before its payload. */
interface Head {
  fin: boolean;
  opcode: number;
  /** payload bytes */
  len: number;
  /** bytes before the masking key (2, 4 or 10) */
  head: number;
}

/** Below this many payload bytes a frame spread over reads is joined by a plain concat. */
const GATHER_MIN = 4096;
/** gather()'s masking key, turned to where each read's bytes fall in the payload (used synchronously) */
const rotated = Buffer.alloc(4);

type WriteCallback = (err?: Error | null) => void;

const kWire = Symbol("wire");
type Tagged = Socket & { [kWire]: WireSocket<unknown> };

function onSocketData(this: Tagged, chunk: Buffer) {
  this[kWire].receive(chunk);
}
function onSocketEnd(this: Tagged) {
  // The peer half-closed without a close frame: close our half too (HTTP server sockets allow half-open).
  const w = this[kWire];
  if (w.readyState === OPEN) w.readyState = CLOSING;
  this.end();
}
function onSocketError(this: Tagged) {
  // "close" follows; nothing is read or written on a broken socket.
  this.destroy();
}
function onSocketClose(this: Tagged) {
  this[kWire].gone();
}

export class WireSocket<T> {
  readyState: ReadyState = OPEN;
  /** The application's state for this socket. */
  data: T | undefined = undefined;
  private closeSent = false;
  private closeReceived = false;
  /** The peer's close code (1005: none given). */
  private closeCode = 1005;
  /** A protocol error ended reading. */
  private failed = false;
  private closeTimer: NodeJS.Timeout | undefined = undefined;
  private closeWaiters: (() => void)[] | undefined = undefined;
  /** Bytes of an incomplete frame, and how many the next step needs before it can go on. */
  private held: Buffer[] | undefined = undefined;
  private heldBytes = 0;
  private need = 0;
  /** A fragmented message being assembled: its opcode (0: none), its fragments and their bytes. */
  private fragOp = 0;
  private frags: Buffer[] | undefined = undefined;
  private fragBytes = 0;

  readonly socket: Socket;
  private readonly handler: WireHandler<T>;
  private readonly maxPayload: number;

  constructor(socket: Socket, handler: WireHandler<T>, maxPayload: number) {
    this.socket = socket;
    this.handler = handler;
    this.maxPayload = maxPayload;
  }

  /** Bytes written but not yet handed to the kernel (ws's bufferedAmount). */
  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  /** A string goes as a text message, a Buffer as a binary one; `cb` runs once it is written (or with why not). */
  send(data: string | Uint8Array, cb?: WriteCallback): void {
    const text = typeof data === "string";
    this.sendMessage(text ? OP_TEXT : OP_BINARY, text ? Buffer.from(data) : data, cb);
  }

  /**
   * One binary message made of `head` and then `body`, written without copying `body` (the relay's
   * tunnel frames: a few header bytes, then up to 64 KiB read from the gateway).
   */
  sendBinary(head: Uint8Array, body: Uint8Array, cb?: WriteCallback): void {
    if (this.readyState !== OPEN) {
      if (cb) process.nextTick(cb, new Error(`WebSocket is not open (readyState ${this.readyState})`));
      return;
    }
    this.writeFrame(OP_BINARY, body, cb, head);
  }

  /** Bytes that are already UTF-8, sent as a text message. */
  sendText(data: Uint8Array): void {
    this.sendMessage(OP_TEXT, data);
  }

  /**
   * Starts the close handshake (a second call does nothing); a peer that does not answer is cut
   * after CLOSE_TIMEOUT_MS. The reason is cut to the 123 bytes a control frame has room for.
   */
  close(code: number, reason = ""): void {
    if (this.readyState === CLOSED || this.closeSent) return;
    this.readyState = CLOSING;
    this.closeSent = true;
    const why = Buffer.from(reason).subarray(0, 123);
    const payload = Buffer.allocUnsafe(2 + why.length);
    payload.writeUInt16BE(code, 0);
    why.copy(payload, 2);
    this.writeFrame(OP_CLOSE, payload);
    if (this.closeReceived) this.socket.end();
    this.armCloseTimer();
  }

  /** Cuts the connection at once. */
  terminate(): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSING;
    this.socket.destroy();
  }

  pause(): void {
    if (this.readyState !== CLOSED) this.socket.pause();
  }

  resume(): void {
    if (this.readyState !== CLOSED) this.socket.resume();
  }

  /** Runs `fn` once the connection is gone (at once if it is). */
  onceClosed(fn: () => void): void {
    if (this.readyState === CLOSED) fn();
    else if (this.closeWaiters) this.closeWaiters.push(fn);
    else this.closeWaiters = [fn];
  }

  /** @internal the socket's data listener */
  receive(chunk: Buffer): void {
    if (this.failed || this.closeReceived) return;
    let data = chunk;
    let off = 0;
    if (this.held) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      if (this.heldBytes < this.need) return;
      const held = this.held;
      this.held = undefined;
      off = this.gather(held, this.heldBytes);
      if (off < 0) {
        if (off === -1) return; // failed, closed, or the socket is gone
        data = Buffer.concat(held, this.heldBytes);
        off = 0;
      }
    }
    while (off < data.length) {
      const used = this.frame(data, off);
      if (used < 0) return; // failed, closed, or the socket is gone
      if (used === 0) {
        const rest = data.subarray(off);
        this.held = [rest];
        this.heldBytes = rest.length;
        return;
      }
      off += used;
    }
  }

  /** @internal the socket's close listener */
  gone(): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    clearTimeout(this.closeTimer);
    this.held = this.frags = undefined;
    this.handler.close(this, this.closeReceived ? this.closeCode : 1006);
    const waiters = this.closeWaiters;
    this.closeWaiters = undefined;
    if (waiters) for (const fn of waiters) fn();
  }

  /**
   * A large frame that arrived over several reads (a 64 KiB tunnel frame always does), its header
   * in the first and its end in the last: its payload is unmasked where it lay and handed on in its
   * parts (binaryParts), or unmasked straight from the reads into one buffer, where joining the
   * reads first would copy every byte once more. Returns where the next
   * frame starts in the last read, -1 to stop, or -2 when this is not such a frame (the caller
   * joins the reads and parses them as usual).
   */
  private gather(held: Buffer[], total: number): number {
    const first = held[0]!;
    const last = held[held.length - 1]!;
    if (held.length < 2 || first.length < 14) return -2;
    const h = this.header(first, 0);
    if (typeof h === "number") return h < 0 ? -1 : -2;
    const size = h.head + 4 + h.len;
    // the frame must end in the last read (else later frames would sit in the middle ones)
    if (h.len < GATHER_MIN || size > total || size <= total - last.length) return -2;
    const key = first.subarray(h.head, h.head + 4);
    // A whole binary message goes out in its parts when the handler takes them: no copy at all.
    const parts = h.fin && h.opcode === OP_BINARY && this.handler.binaryParts ? ([] as Buffer[]) : undefined;
    const payload = parts ? undefined : Buffer.allocUnsafe(h.len);
    let at = 0;
    let end = 0;
    for (let i = 0; i < held.length && at < h.len; i++) {
      const from = i === 0 ? h.head + 4 : 0;
      const piece = held[i]!;
      const take = Math.min(piece.length - from, h.len - at);
      // the key runs on across reads: the byte at payload offset `at` uses key[at & 3]
      for (let k = 0; k < 4; k++) rotated[k] = key[(at + k) & 3]!;
      const view = piece.subarray(from, from + take);
      if (parts) {
        masking.unmask(view, rotated);
        parts.push(view);
      } else masking.mask(view, rotated, payload!, at, take);
      at += take;
      end = from + take;
    }
    if (parts) {
      this.handler.binaryParts!(this, parts);
      return this.failed || this.socket.destroyed ? -1 : end;
    }
    return this.payload(h, payload!) < 0 ? -1 : end;
  }

  /** A frame's header at `off`, checked; or 0 when it is not all here yet (`need` says how many), -1 to stop. */
  private header(data: Buffer, off: number): Head | number {
    const avail = data.length - off;
    if (avail < 2) return this.wait(2);
    const b0 = data[off]!;
    const b1 = data[off + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if (b0 & 0x70) return this.fail(1002, "RSV bits set, but no extension was negotiated");
    if ((b1 & 0x80) === 0) return this.fail(1002, "a client's frames must be masked");
    let len = b1 & 0x7f;
    let head = 2;
    if (len === 126) {
      if (avail < 4) return this.wait(4);
      len = data.readUInt16BE(off + 2);
      head = 4;
    } else if (len === 127) {
      if (avail < 10) return this.wait(10);
      const high = data.readUInt32BE(off + 2);
      if (high >= 0x80000000) return this.fail(1002, "64-bit payload length with its top bit set");
      if (high > 0) return this.fail(1009, `message over ${this.maxPayload} bytes`);
      len = data.readUInt32BE(off + 6);
      head = 10;
    }
    if (opcode >= OP_CLOSE) {
      if (opcode > OP_PONG) return this.fail(1002, `unknown opcode ${opcode}`);
      if (!fin) return this.fail(1002, "a control frame must not be fragmented");
      if (len > 125) return this.fail(1002, "a control frame's payload is at most 125 bytes");
    } else {
      if (opcode > OP_BINARY) return this.fail(1002, `unknown opcode ${opcode}`);
      if (opcode === OP_CONTINUATION && this.fragOp === 0)
        return this.fail(1002, "a continuation frame with no message to continue");
      if (opcode !== OP_CONTINUATION && this.fragOp !== 0)
        return this.fail(1002, "a new message before the fragmented one ended");
      if (this.fragBytes + len > this.maxPayload)
        return this.fail(1009, `message over ${this.maxPayload} bytes`);
    }
    return { fin, opcode, len, head };
  }

  /** One frame at `off`: the bytes it took, 0 when it is not all here yet (`need` says how many), -1 to stop. */
  private frame(data: Buffer, off: number): number {
    const h = this.header(data, off);
    if (typeof h === "number") return h;
    const size = h.head + 4 + h.len;
    if (data.length - off < size) return this.wait(size);
    const payload = data.subarray(off + h.head + 4, off + size);
    if (h.len > 0) masking.unmask(payload, data.subarray(off + h.head, off + h.head + 4));
    return this.payload(h, payload) < 0 ? -1 : size;
  }

  /** A whole frame's unmasked payload: delivered, kept as a fragment, or answered; -1 to stop. */
  private payload({ fin, opcode, len }: Head, payload: Buffer): number {
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
        if (fin) this.deliver(opcode, payload);
        else {
          this.fragOp = opcode;
          this.frags = [payload];
          this.fragBytes = len;
        }
        break;
      case OP_CONTINUATION: {
        this.frags!.push(payload);
        this.fragBytes += len;
        if (!fin) break;
        const whole = Buffer.concat(this.frags!, this.fragBytes);
        const op = this.fragOp;
        this.fragOp = this.fragBytes = 0;
        this.frags = undefined;
        this.deliver(op, whole);
        break;
      }
      case OP_PING:
        if (this.readyState === OPEN) this.writeFrame(OP_PONG, payload);
        this.handler.alive(this);
        break;
      case OP_PONG:
        this.handler.alive(this);
        break;
      case OP_CLOSE:
        return this.closeFrame(payload);
    }
    return this.failed || this.socket.destroyed ? -1 : 0;
  }

  private deliver(opcode: number, payload: Buffer) {
    if (opcode === OP_TEXT && !isUtf8(payload)) {
      this.fail(1007, "a text message that is not UTF-8");
      return;
    }
    this.handler.message(this, payload, opcode === OP_BINARY);
  }

  /** The peer's close frame: answered with the same code (unless we sent ours), then we close TCP first, as a server does. */
  private closeFrame(payload: Buffer): number {
    if (payload.length === 1) return this.fail(1002, "a close frame's payload cannot be 1 byte");
    if (payload.length >= 2) {
      const code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) return this.fail(1002, `invalid close code ${code}`);
      if (!isUtf8(payload.subarray(2))) return this.fail(1007, "a close reason that is not UTF-8");
      this.closeCode = code;
    }
    this.closeReceived = true;
    this.held = this.frags = undefined;
    if (!this.closeSent) {
      this.closeSent = true;
      this.readyState = CLOSING;
      this.writeFrame(OP_CLOSE, payload.length >= 2 ? payload : EMPTY);
    }
    this.socket.end();
    this.armCloseTimer();
    return -1;
  }

  private wait(need: number): number {
    this.need = need;
    return 0;
  }

  private fail(status: WireError["status"], message: string): number {
    this.failed = true;
    this.held = this.frags = undefined;
    this.handler.error(this, new WireError(status, message));
    this.close(status);
    this.socket.end();
    return -1;
  }

  private armCloseTimer() {
    if (this.closeTimer || this.readyState === CLOSED) return;
    this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
    this.closeTimer.unref();
  }

  private sendMessage(opcode: number, payload: Uint8Array, cb?: WriteCallback) {
    if (this.readyState !== OPEN) {
      if (cb) process.nextTick(cb, new Error(`WebSocket is not open (readyState ${this.readyState})`));
      return;
    }
    this.writeFrame(opcode, payload, cb);
  }

  /** One frame whose payload is `prefix` (if any) and then `payload`. */
  private writeFrame(opcode: number, payload: Uint8Array, cb?: WriteCallback, prefix?: Uint8Array) {
    const extra = prefix?.length ?? 0;
    const len = extra + payload.length;
    const head = len < 126 ? 2 : len < 0x10000 ? 4 : 10;
    const out = Buffer.allocUnsafe(len < COPY_BELOW ? head + len : head + extra);
    out[0] = 0x80 | opcode;
    if (head === 2) out[1] = len;
    else if (head === 4) {
      out[1] = 126;
      out.writeUInt16BE(len, 2);
    } else {
      out[1] = 127;
      out.writeUInt32BE(Math.floor(len / 0x100000000), 2);
      out.writeUInt32BE(len >>> 0, 6);
    }
    if (prefix) out.set(prefix, head);
    if (len < COPY_BELOW) {
      out.set(payload, head + extra);
      // Small frames to one socket within one tick leave in one system call (a tunnel's end and
      // close, a window update and the next connect): the socket stays corked until the tick ends.
      if (this.socket.writableCorked === 0) {
        this.socket.cork();
        process.nextTick(uncork, this.socket);
      }
      this.socket.write(out, cb);
      return;
    }
    this.socket.cork();
    this.socket.write(out);
    this.socket.write(payload, cb);
    this.socket.uncork();
  }
}

function uncork(socket: Socket) {
  socket.uncork();
}

/** RFC 6455 section 7.4: the codes a close frame may carry. */
function validCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999)
  );
}

/** Why this upgrade request is not a WebSocket handshake we take, as [status, detail]; undefined when it is. */
function handshakeProblem(req: IncomingMessage): [number, string, Record<string, string>?] | undefined {
  if (req.method !== "GET") return [405, "Invalid HTTP method"];
  if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") return [400, "Invalid Upgrade header"];
  const key = req.headers["sec-websocket-key"];
  if (!key || !/^[+/0-9A-Za-z]{22}==$/.test(key)) return [400, "Missing or invalid Sec-WebSocket-Key header"];
  const version = Number(req.headers["sec-websocket-version"]);
  if (version !== 13 && version !== 8)
    return [400, "Missing or invalid Sec-WebSocket-Version header", { "Sec-WebSocket-Version": "13, 8" }];
  const offered = req.headers["sec-websocket-protocol"];
  if (offered !== undefined) {
    const list = offered.split(",").map((p) => p.trim());
    if (list.some((p) => !TOKEN.test(p)) || new Set(list).size !== list.length)
      return [400, "Invalid Sec-WebSocket-Protocol header"];
  }
  return undefined;
}

/**
 * Completes a WebSocket handshake on an HTTP server's "upgrade" socket, echoing `protocol` (one the
 * client offered, or none), and returns the open socket; a request that is not a valid handshake
 * gets its HTTP error and undefined. `head` (bytes after the request) is read as the first frames.
 */
export function acceptWebSocket<T>(
  req: IncomingMessage,
  duplex: Duplex,
  head: Buffer,
  options: { protocol: string | undefined; handler: WireHandler<T>; maxPayload: number },
): WireSocket<T> | undefined {
  const socket = duplex as Socket;
  if (!socket.readable || !socket.writable) {
    socket.destroy();
    return undefined;
  }
  const problem = handshakeProblem(req);
  if (problem) {
    const [status, detail, extra] = problem;
    const headers = Object.entries({
      Connection: "close",
      "Content-Type": "text/plain",
      "Content-Length": String(Buffer.byteLength(detail)),
      ...extra,
    }).map(([k, v]) => `${k}: ${v}\r\n`);
    socket.once("finish", socket.destroy);
    socket.end(`HTTP/1.1 ${status} ${statusText(status)}\r\n${headers.join("")}\r\n${detail}`);
    return undefined;
  }
  const accept = createHash("sha1")
    .update(req.headers["sec-websocket-key"] + GUID)
    .digest("base64");
  socket.setTimeout(0);
  socket.setNoDelay(true);
  socket.write(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n` +
      (options.protocol ? `Sec-WebSocket-Protocol: ${options.protocol}\r\n` : "") +
      "\r\n",
  );
  const wire = new WireSocket(socket, options.handler, options.maxPayload);
  (socket as Tagged)[kWire] = wire as WireSocket<unknown>;
  socket.on("data", onSocketData);
  socket.on("end", onSocketEnd);
  socket.on("error", onSocketError);
  socket.on("close", onSocketClose);
  if (head.length > 0) wire.receive(head);
  return wire;
}

function statusText(status: number): string {
  return status === 405 ? "Method Not Allowed" : "Bad Request";
}
