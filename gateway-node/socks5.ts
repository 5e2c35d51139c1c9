/**
 * SOCKS5 mode: RFC 1928 CONNECT (IPv4, IPv6 and domain names, checked by targets.ts) with RFC 1929
 * username/password. Failures before the tunnel is up answer the closest REP code.
 */
import type { Socket } from "node:net";
import { asGatewayError, GatewayError, newRequestId } from "./errors.ts";
import type { Target } from "./exits.ts";
import { startLogin } from "./login.ts";
import { countError } from "./requests.ts";
import { checkTarget } from "./targets.ts";
import { type GatewayContext, Reservation, targetPolicy } from "./tunnel.ts";

/** Buffered reads of exact byte counts from a socket, for the handshake only. */
class HandshakeReader {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;
  /** the client hung up mid-handshake: nothing to answer */
  get gone(): boolean {
    return this.ended;
  }
  private readonly socket: Socket;
  private readonly onData = (d: Buffer) => {
    this.buf = Buffer.concat([this.buf, d]);
    if (this.buf.length > 4096) this.socket.destroy();
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake?.();
  };
  constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error("client went away during the SOCKS handshake");
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Stops reading; returns bytes the client already sent past the handshake. */
  detach(): Buffer {
    this.socket.pause();
    this.socket.removeListener("data", this.onData);
    this.socket.removeListener("end", this.onEnd);
    this.socket.removeListener("close", this.onEnd);
    return this.buf;
  }
}

function reply(rep: number): Buffer {
  // BND.ADDR/PORT: 0.0.0.0:0 - the exit's address is not ours to reveal.
  return Buffer.from([0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
}

async function readTarget(r: HandshakeReader): Promise<Target | number> {
  const [ver, cmd, , atyp] = await r.read(4);
  if (ver !== 0x05) return 0x01;
  let host: string;
  if (atyp === 0x01) host = [...(await r.read(4))].join(".");
  else if (atyp === 0x03) {
    const [len = 0] = await r.read(1);
    host = (await r.read(len)).toString("latin1");
    // Printable ASCII only; what it names is decided by the target policy (targets.ts), once.
    if (!len || !/^[\x21-\x7e]+$/.test(host)) return 0x04;
  } else if (atyp === 0x04) {
    const b = await r.read(16);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
    host = groups.join(":");
  } else return 0x08;
  const port = (await r.read(2)).readUInt16BE(0);
  if (cmd !== 0x01) return 0x07;
  return { host, port };
}

export async function handleSocks(ctx: GatewayContext, socket: Socket): Promise<void> {
  const requestId = newRequestId();
  socket.on("error", () => {});
  // The handshake's absolute deadline and the unauthenticated caps are ctx.handshakes' (gateway.ts).
  const r = new HandshakeReader(socket);
  let authed = false;
  let reservation: Reservation | undefined;
  try {
    const [ver, nmethods = 0] = await r.read(2);
    if (ver !== 0x05) {
      socket.destroy();
      return;
    }
    const methods = await r.read(nmethods);
    if (!methods.includes(0x02)) {
      // Only username/password: an anonymous client gets "no acceptable methods".
      socket.end(Buffer.from([0x05, 0xff]));
      return;
    }
    socket.write(Buffer.from([0x05, 0x02]));
    const [authVer, ulen = 0] = await r.read(2);
    if (authVer !== 0x01) {
      socket.destroy();
      return;
    }
    const username = (await r.read(ulen)).toString("utf8");
    const [plen = 0] = await r.read(1);
    const password = (await r.read(plen)).toString("utf8");
    const { login, guess } = startLogin(ctx, {
      credentials: { username, password },
      clientIp: socket.remoteAddress ?? "",
    });
    // A secret that logged in here before: the lease and the pick go out beside the login.
    if (guess) reservation = new Reservation(ctx, guess, requestId, login);
    const principal = await login.catch((err: unknown) => {
      const g = asGatewayError(err);
      // Failures of the login itself end at RFC 1929's status byte; the rest (cap, suspended)
      // are answered on the CONNECT with a REP code once the client asks for a target.
      if (
        g.code === "E_AUTH_INVALID" ||
        g.code === "E_AUTH_REQUIRED" ||
        g.code === "E_USERNAME_PARSE" ||
        g.code === "E_RATE_LIMITED"
      )
        throw g;
      return g;
    });
    authed = true;
    if (!(principal instanceof GatewayError)) {
      ctx.handshakes.authenticated(socket);
      // Otherwise they go out now, while the client names its target: the CONNECT need not wait
      // for Redis once it comes. Every way out below gives them back.
      reservation ??= new Reservation(ctx, principal, requestId);
    }
    socket.write(Buffer.from([0x01, 0x00]));
    const target = await readTarget(r);
    ctx.handshakes.done(socket);
    if (typeof target === "number") {
      await reservation?.giveBack();
      socket.end(reply(target));
      return;
    }
    if (principal instanceof GatewayError || !reservation) throw principal;
    const tunnel = await reservation.open(checkTarget(target, targetPolicy(ctx.config)));
    if (socket.destroyed) {
      await tunnel.close();
      return;
    }
    const early = r.detach();
    socket.write(reply(0x00));
    tunnel.splice(socket, early);
  } catch (err) {
    // Not opened (the client left, a refused target, a refused login): nothing stays held.
    void reservation?.giveBack();
    if (r.gone) {
      socket.destroy();
      return;
    }
    const g = asGatewayError(err);
    countError(ctx, g, err, requestId);
    if (socket.destroyed) return;
    socket.end(authed ? reply(g.socksRep) : Buffer.from([0x01, 0x01]));
  }
}
