/**
 * Unauthenticated connections on the customer ports (issue 16 item 7): each gets an absolute
 * deadline to finish its handshake (not an idle timeout: a byte every few seconds does not extend
 * it), and at most `perIp` of them per source address and `total` overall may be open at once.
 */
import type { Socket } from "node:net";

interface Pending {
  ip: string;
  timer: NodeJS.Timeout;
  /** still counted against the unauthenticated caps */
  counted: boolean;
}

export class HandshakeGuard {
  private readonly pending = new WeakMap<Socket, Pending>();
  private readonly perIpCount = new Map<string, number>();
  private count = 0;
  private readonly opts: { deadlineMs: number; perIp: number; total: number };

  constructor(opts: { deadlineMs: number; perIp: number; total: number }) {
    this.opts = opts;
  }

  /** unauthenticated connections open now */
  get open(): number {
    return this.count;
  }

  /**
   * A new customer connection: starts its deadline; false (and the caller refuses it) when its
   * address or the gateway already has as many unauthenticated connections as allowed.
   */
  admit(socket: Socket): boolean {
    const ip = socket.remoteAddress ?? "";
    const mine = this.perIpCount.get(ip) ?? 0;
    if (mine >= this.opts.perIp || this.count >= this.opts.total) return false;
    this.perIpCount.set(ip, mine + 1);
    this.count++;
    const timer = setTimeout(() => socket.destroy(), this.opts.deadlineMs);
    timer.unref();
    this.pending.set(socket, { ip, timer, counted: true });
    socket.once("close", () => this.done(socket));
    return true;
  }

  /** The client proved who it is: it no longer counts against the unauthenticated caps. */
  authenticated(socket: Socket): void {
    const p = this.pending.get(socket);
    if (!p?.counted) return;
    p.counted = false;
    this.count--;
    const left = (this.perIpCount.get(p.ip) ?? 1) - 1;
    if (left > 0) this.perIpCount.set(p.ip, left);
    else this.perIpCount.delete(p.ip);
  }

  /** Everything the client had to send for the handshake has arrived: the deadline no longer applies. */
  done(socket: Socket): void {
    const p = this.pending.get(socket);
    if (!p) return;
    clearTimeout(p.timer);
    this.authenticated(socket);
    this.pending.delete(socket);
  }
}
