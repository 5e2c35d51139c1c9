/**
 * One customer tunnel: lease bytes, pick an endpoint atomically, open its exit, then splice the
 * customer socket to the exit with metering. Both sockets close together, and the hold and the
 * byte lease are given back exactly once however the tunnel ends.
 */
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { keys } from "../shared/keys.ts";
import type { Logger } from "../shared/log.ts";
import { runScript } from "../shared/lua/script.ts";
import { tunnelFailure } from "../shared/lua/scripts.gen.ts";
import {
  type Hold,
  releaseHold,
  renewHold,
  type SelectedEndpoint,
  type SelectResult,
  selectEndpoint,
} from "../shared/pool.ts";
import type { RedisClient } from "../shared/redis.ts";
import type { PooledSink } from "../shared/tunnel-open.node.ts";
import type { Principal } from "./auth.ts";
import type { GatewayConfig } from "./config.ts";
import { GatewayError } from "./errors.ts";
import { openExit } from "./exits.ts";
import type { HandshakeGuard } from "./handshakes.ts";
import type { LoginCache } from "./login.ts";
import { TunnelMeter } from "./metering.ts";
import { type Metrics, type PoolBytes, poolBytes } from "./metrics.ts";
import type { ModemByteCounters } from "./modem-bytes.ts";
import {
  type CheckedTarget,
  checkTarget,
  type Lookup,
  resolveForExit,
  type Target,
  type TargetPolicy,
} from "./targets.ts";

export interface GatewayContext {
  config: GatewayConfig;
  redis: RedisClient;
  /** Redis's clock as this host reads it (shared/clock.ts): every deadline other processes see */
  now: () => number;
  metrics: Metrics;
  log: Logger;
  tunnels: Set<Tunnel>;
  draining: boolean;
  /** name -> addresses, for exits that cannot check targets themselves (modems) */
  lookup: Lookup;
  handshakes: HandshakeGuard;
  /** bytes each modem exit served, for its farmer (ADR 0017); absent in tests that do not count */
  modemBytes?: ModemByteCounters;
  /** the last login of each secret: a returning key's login, lease and pick share a round trip */
  logins: LoginCache;
}

export function targetPolicy(config: GatewayConfig): TargetPolicy {
  return { allowLoopback: config.GATEWAY_ALLOW_PRIVATE_TARGETS, allowList: config.GATEWAY_TARGET_HOSTS };
}

const MAX_EXIT_ATTEMPTS = 3;

export class Tunnel {
  readonly id = `t_${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
  readonly principal: Principal;
  readonly endpoint: SelectedEndpoint;
  readonly hold: Hold;
  readonly meter: TunnelMeter;
  readonly exit: Socket;
  readonly head: Buffer;
  /** set for an exit whose reads land in pooled buffers (exits.ts): they arrive here, not as 'data' */
  private readonly exitReads: ((sink: PooledSink) => void) | undefined;
  /** This tunnel's lines carry requestId, keyId, endpointId and deviceId. */
  readonly log: Logger;
  private readonly ctx: GatewayContext;
  /** this pool's byte counters, looked up once: the pump adds per chunk without a label lookup */
  private readonly poolBytes: PoolBytes;
  private client: Duplex | undefined;
  private renewTimer: NodeJS.Timeout;
  private closing: Promise<void> | undefined;
  private bytesToExit = 0;
  private bytesFromExit = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  private stallReported = false;
  /** a side sent its end (FIN): what is still queued for the other side is theirs to get */
  private exitEnded = false;
  private clientEnded = false;
  /** last time a byte moved either way (monotonic ms): an idle tunnel gives its hold back */
  private lastActivity = performance.now();
  private readonly openedAt = performance.now();

  constructor(
    ctx: GatewayContext,
    p: {
      principal: Principal;
      endpoint: SelectedEndpoint;
      hold: Hold;
      meter: TunnelMeter;
      exit: Socket;
      head: Buffer;
      exitReads?: (sink: PooledSink) => void;
      log: Logger;
    },
  ) {
    this.ctx = ctx;
    this.log = p.log;
    // The exit's own pool (a route may ask for `any`).
    this.poolBytes = poolBytes(ctx.metrics, p.endpoint.pool);
    this.principal = p.principal;
    this.endpoint = p.endpoint;
    this.hold = p.hold;
    this.meter = p.meter;
    this.exit = p.exit;
    this.head = p.head;
    this.exitReads = p.exitReads;
    ctx.tunnels.add(this);
    ctx.metrics.tunnelsOpened++;
    this.exit.on("error", (err: NodeJS.ErrnoException) => {
      // The exit died under a live customer: the prober's circuit breaker wants to know.
      if (!this.closing) void reportFailure(ctx, this.endpoint, `mid_stream_${err.code ?? "error"}`);
      void this.close();
    });
    this.exit.on("close", () => {
      // Bytes went out and nothing ever came back: the failure a broken peer shows at the TLS
      // handshake inside the tunnel. A target that answers and then closes is not reported.
      if (!this.closing && this.bytesToExit > 0 && this.bytesFromExit === 0)
        void reportFailure(ctx, this.endpoint, "closed_without_reply");
      this.closeWhenFlushed(this.client, this.exitEnded);
    });
    this.meter.onCapReached = () => void this.close();
    this.renewTimer = setInterval(
      () => {
        if (performance.now() - this.lastActivity > ctx.config.GATEWAY_IDLE_TIMEOUT_MS) {
          void this.close();
          return;
        }
        renewHold(ctx.redis, this.hold, ctx.now(), ctx.config.GATEWAY_HOLD_LEASE_MS)
          .then((live) => {
            // Our hold lapsed (we stalled past the lease) and its slot may be resold: honour the cap.
            if (!live) void this.close();
          })
          .catch(() => {});
      },
      Math.max(100, Math.floor(ctx.config.GATEWAY_HOLD_LEASE_MS / 3)),
    );
    this.renewTimer.unref();
  }

  /** Pipes the customer socket to the exit (bytes counted both ways) until either side ends. */
  splice(client: Duplex, clientHead?: Buffer): void {
    this.client = client;
    const exit = this.exit;
    const meter = this.meter;
    client.on("error", () => void this.close());
    client.on("close", () => this.closeWhenFlushed(exit, this.clientEnded));
    if (client instanceof Socket)
      client.setTimeout(this.ctx.config.GATEWAY_IDLE_TIMEOUT_MS, () => void this.close());
    let paused = false;
    meter.onPause = () => {
      paused = true;
      client.pause();
      exit.pause();
    };
    meter.onResume = () => {
      paused = false;
      client.resume();
      exit.resume();
    };
    const pump = (from: Duplex, to: Duplex) => {
      // `release` (pooled exit reads) gives the chunk's buffer back once it is written on.
      const onChunk = (chunk: Buffer, release?: () => void) => {
        this.lastActivity = performance.now();
        meter.consume(chunk.length);
        this.countModem(from === exit, chunk.length);
        if (from === exit) {
          this.poolBytes.up += chunk.length;
          this.bytesFromExit += chunk.length;
          this.exitAnswered();
        } else {
          this.poolBytes.down += chunk.length;
          this.bytesToExit += chunk.length;
          this.customerWaiting();
        }
        if (!to.write(chunk, release)) from.pause();
      };
      if (from === exit && this.exitReads)
        // A socket's write callback runs once the kernel has the bytes; another Duplex (the
        // forward proxy's in-memory pair) may call it while still holding the chunk, so it gets a copy.
        this.exitReads(
          to instanceof Socket
            ? onChunk
            : (chunk, release) => {
                const copy = Buffer.from(chunk);
                release();
                onChunk(copy);
              },
        );
      else from.on("data", (chunk: Buffer) => onChunk(chunk));
      to.on("drain", () => {
        if (!paused) from.resume();
      });
      from.on("end", () => {
        if (from === exit) this.exitEnded = true;
        else this.clientEnded = true;
        to.end();
      });
    };
    pump(client, exit);
    pump(exit, client);
    if (this.head.length) {
      this.poolBytes.up += this.head.length;
      this.bytesFromExit += this.head.length;
      meter.consume(this.head.length);
      this.countModem(true, this.head.length);
      client.write(this.head);
    }
    if (clientHead?.length) {
      this.poolBytes.down += clientHead.length;
      this.bytesToExit += clientHead.length;
      meter.consume(clientHead.length);
      this.countModem(false, clientHead.length);
      exit.write(clientHead);
    }
    if (!paused) {
      client.resume();
      exit.resume();
    }
  }

  /**
   * "Accepts tunnels but drops bytes": the customer sent bytes and the exit has been silent since,
   * for GATEWAY_STALL_REPORT_MS. Reported once per tunnel for a re-probe (the prober decides; a
   * long-poll that trips this costs one probe that passes). The tunnel itself is left alone.
   */
  private customerWaiting(): void {
    if (this.stallTimer || this.stallReported || this.closing) return;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined;
      if (this.closing) return;
      this.stallReported = true;
      void reportFailure(this.ctx, this.endpoint, "mid_stream_stalled");
    }, this.ctx.config.GATEWAY_STALL_REPORT_MS);
    this.stallTimer.unref();
  }

  /** A modem exit's bytes earn its farmer (ADR 0017); a peer's are counted by its relay. */
  private countModem(fromExit: boolean, n: number): void {
    if (this.endpoint.kind !== "modem") return;
    this.ctx.modemBytes?.add(this.endpoint.endpointId, fromExit ? n : 0, fromExit ? 0 : n);
  }

  private exitAnswered(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  /**
   * One side closed. After a clean end (FIN, no error) the other side first gets what is still
   * queued for it, its own end behind it: closing at once would cut the tail of a download whose
   * customer reads slower than the exit sent (up to a socket's high-water mark, queued in this
   * process, lost). A customer that never reads is closed by the idle timeout.
   */
  private closeWhenFlushed(to: Duplex | undefined, ended: boolean): void {
    if (!ended || !to || to.destroyed || to.writableFinished || to.writableLength === 0) {
      void this.close();
      return;
    }
    to.once("finish", () => void this.close());
  }

  /** Closes both sockets and gives back the hold and the unspent byte lease; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.renewTimer);
      clearTimeout(this.stallTimer);
      this.exit.destroy();
      this.client?.destroy();
      // Independent keys: sent together, they share one round trip (ioredis auto-pipelining).
      await Promise.all([
        this.meter.close(),
        releaseHold(this.ctx.redis, this.hold, this.ctx.now()).catch(() => {}),
      ]);
      this.ctx.tunnels.delete(this);
      this.ctx.metrics.tunnelsClosed++;
      this.log.info(
        { up: this.bytesFromExit, down: this.bytesToExit, ms: Math.round(performance.now() - this.openedAt) },
        "tunnel closed",
      );
    })();
    return this.closing;
  }
}

/**
 * Authenticated principal + target -> a live tunnel, or a GatewayError saying why not. With
 * `login`, `principal` is only what the last login of the same secret said (login.ts): the lease
 * and the pick go out beside the login, and nothing opens before `login` confirms it.
 */
export async function openTunnel(
  ctx: GatewayContext,
  principal: Principal,
  target: Target,
  requestId: string,
  login?: Promise<Principal>,
): Promise<Tunnel> {
  let checked: CheckedTarget;
  try {
    checked = checkTarget(target, targetPolicy(ctx.config));
    if (ctx.draining) throw new GatewayError("E_INTERNAL", "gateway is draining; retry");
  } catch (err) {
    await login; // a refused login is answered before a refused target, as without a guess
    throw err;
  }
  return new Reservation(ctx, principal, requestId, login).open(checked);
}

/** What select_endpoint is asked for a principal, but for the time and the exits that failed. */
function selection(config: GatewayConfig, principal: Principal) {
  const route = principal.route;
  // Holds are bounded by what the key bought: one per GATEWAY_HOLD_BYTES it has left (at least one,
  // from the usage read at login), and never more than its own maxConnections.
  const left = principal.capBytes === undefined ? undefined : principal.capBytes - principal.usedBytes;
  const byBytes = left === undefined ? 0 : Math.max(1, Math.ceil(left / config.GATEWAY_HOLD_BYTES));
  const maxConnections =
    principal.maxConnections > 0 && byBytes > 0
      ? Math.min(principal.maxConnections, byBytes)
      : principal.maxConnections || byBytes;
  return {
    keyId: principal.keyId,
    pool: route.pool,
    country: route.country,
    ipType: route.iptype,
    carrier: route.carrier,
    city: route.city,
    sid: route.sid,
    rot: route.rot,
    ttlSec: route.ttl,
    maxConnections,
    endpointId: principal.endpointId,
    pinDevice: route.pinDevice,
  };
}

function sameSelection(a: ReturnType<typeof selection>, b: ReturnType<typeof selection>): boolean {
  for (const k of Object.keys(a) as (keyof typeof a)[]) if (a[k] !== b[k]) return false;
  return true;
}

/**
 * A tunnel's first byte lease and endpoint pick, sent as soon as the key is known (or guessed, with
 * the login beside them), before the exit is asked: HTTP asks at once, SOCKS5 once its client
 * names the target. Until `open` succeeds the reservation owns a hold and leased bytes, and every
 * way out gives them back (`giveBack`, idempotent).
 */
export class Reservation {
  readonly #ctx: GatewayContext;
  readonly #requestId: string;
  readonly #log: Logger;
  readonly #meter: TunnelMeter;
  readonly #leased: Promise<boolean>;
  readonly #started = performance.now();
  readonly #failed: string[] = [];
  #who: Principal;
  #asked: ReturnType<typeof selection>;
  #firstPick: Promise<SelectResult>;
  #given: Promise<void> | undefined;
  /** settles once the login confirmed the guess (or at once without one); rejects with its refusal */
  readonly confirmed: Promise<void>;

  constructor(ctx: GatewayContext, principal: Principal, requestId: string, login?: Promise<Principal>) {
    this.#ctx = ctx;
    this.#requestId = requestId;
    this.#who = principal;
    this.#log = ctx.log.child({ requestId, keyId: principal.keyId });
    this.#meter = this.#newMeter(principal.keyId);
    this.#asked = selection(ctx.config, principal);
    // The byte lease and the first pick go out together (and beside the login, given one), one
    // round trip rather than two; a refused lease gives the pick's hold straight back.
    this.#firstPick = this.#select();
    this.#leased = this.#meter.start();
    this.#leased.catch(() => {}); // awaited by open; never an unhandled rejection meanwhile
    this.confirmed = login ? this.#confirm(login) : Promise.resolve();
    this.confirmed.catch(() => {});
  }

  #newMeter(keyId: string): TunnelMeter {
    const c = this.#ctx.config;
    return new TunnelMeter(
      {
        redis: this.#ctx.redis,
        now: this.#ctx.now,
        leaseBytes: c.GATEWAY_BYTE_LEASE,
        maxLeaseBytes: c.GATEWAY_BYTE_LEASE_MAX,
        flushMs: c.GATEWAY_FLUSH_MS,
        log: this.#log,
      },
      keyId,
      `${c.GATEWAY_ID}:${this.#requestId}`,
    );
  }

  #select(): Promise<SelectResult> {
    const ctx = this.#ctx;
    const asked = this.#asked;
    const selectStarted = performance.now();
    const picked = selectEndpoint(ctx.redis, {
      ...asked,
      now: ctx.now(),
      leaseMs: ctx.config.GATEWAY_HOLD_LEASE_MS,
      exclude: this.#failed,
    }).then((r) => {
      ctx.metrics.selectEndpointSeconds.observe(
        { pool: asked.pool },
        (performance.now() - selectStarted) / 1000,
      );
      return r;
    });
    picked.catch(() => {}); // awaited by open or giveBack
    return picked;
  }

  #giveBackPick(): Promise<unknown> {
    const ctx = this.#ctx;
    return this.#firstPick
      .then((p) => (p.ok ? releaseHold(ctx.redis, p.hold, ctx.now()) : false))
      .catch(() => false);
  }

  async #confirm(login: Promise<Principal>): Promise<void> {
    const metrics = this.#ctx.metrics;
    let confirmed: Principal;
    try {
      confirmed = await login;
    } catch (err) {
      // Refused after all: nothing of what went out beside the login may stay.
      metrics.loginGuesses.refused++;
      await this.giveBack();
      throw err;
    }
    const fresh = selection(this.#ctx.config, confirmed);
    if (fresh.keyId !== this.#asked.keyId) {
      // Never expected (a secret names one key for good): the lease is another key's.
      await this.giveBack();
      throw new GatewayError("E_INTERNAL", "the key changed under its secret; retry");
    }
    this.#who = confirmed;
    if (sameSelection(fresh, this.#asked)) {
      metrics.loginGuesses.confirmed++;
      return;
    }
    // Its pool or limits changed since the last login: pick again by what Redis says now.
    metrics.loginGuesses.repicked++;
    await this.#giveBackPick();
    if (this.#given) return; // given back meanwhile (the SOCKS5 client left): no new hold
    this.#asked = fresh;
    this.#firstPick = this.#select();
  }

  /** Gives back the hold and the leased bytes; for a reservation that will not be opened. */
  giveBack(): Promise<void> {
    this.#given ??= Promise.all([
      this.#giveBackPick(),
      this.#leased.then((ok) => (ok ? this.#meter.close() : undefined)).catch(() => {}),
    ]).then(() => {});
    return this.#given;
  }

  /** Opens the exit to a checked target; the setup histogram counts from the reservation. */
  async open(checked: CheckedTarget): Promise<Tunnel> {
    const ctx = this.#ctx;
    await this.confirmed; // a refused login is answered as such, and is no setup
    const pool = this.#who.route.pool;
    const observe = (result: string) =>
      ctx.metrics.tunnelSetupSeconds.observe({ pool, result }, (performance.now() - this.#started) / 1000);
    try {
      if (this.#given) throw new GatewayError("E_INTERNAL", "this tunnel's reservation was given back");
      if (ctx.draining) {
        await this.giveBack();
        throw new GatewayError("E_INTERNAL", "gateway is draining; retry");
      }
      // From here #open gives back what it does not use (each failed pick, the meter).
      this.#given = Promise.resolve();
      const tunnel = await this.#open(checked);
      observe("ok");
      return tunnel;
    } catch (err) {
      observe(err instanceof GatewayError ? err.code : "E_INTERNAL");
      throw err; // logged once, with the request id, where it is answered (countError)
    }
  }

  async #open(checked: CheckedTarget): Promise<Tunnel> {
    const ctx = this.#ctx;
    const who = this.#who;
    const meter = this.#meter;
    const log = this.#log;
    const route = who.route;
    const policy = targetPolicy(ctx.config);
    // Resolved once per request, and only if a modem is picked (peers resolve and check on their side).
    let modemTarget: Promise<Target> | undefined;
    let started: boolean;
    try {
      started = await this.#leased;
    } catch (err) {
      await this.#giveBackPick();
      throw err;
    }
    if (!started) {
      await this.#giveBackPick();
      throw new GatewayError("E_CAP_EXCEEDED", "traffic cap reached; top up to continue");
    }
    // Built only when an exit fails: an Error's stack trace is not free on every request.
    let last: GatewayError | undefined;
    const noneLeft = () => last ?? new GatewayError("E_NO_STOCK", "no endpoint available");
    try {
      for (let attempt = 0; attempt < MAX_EXIT_ATTEMPTS; attempt++) {
        const picked = attempt === 0 ? await this.#firstPick : await this.#select();
        if (!picked.ok) {
          if (attempt > 0 && picked.code === "E_NO_STOCK") throw noneLeft();
          throw new GatewayError(
            picked.code,
            picked.message,
            picked.code === "E_NO_CAPACITY" ? { retryAfterS: ctx.config.GATEWAY_RETRY_AFTER_S } : {},
          );
        }
        let exitTarget: Target = { host: checked.host, port: checked.port };
        if (picked.endpoint.kind === "modem") {
          modemTarget ??= resolveForExit(checked, policy, ctx.lookup);
          try {
            exitTarget = await modemTarget;
          } catch (err) {
            await releaseHold(ctx.redis, picked.hold, ctx.now()).catch(() => {});
            throw err;
          }
        }
        const exit = await openExit(picked.endpoint, exitTarget, {
          relaySecret: ctx.config.RELAY_SHARED_SECRET,
          timeoutMs: ctx.config.GATEWAY_CONNECT_TIMEOUT_MS,
          requestId: this.#requestId,
          buyerAccountId: who.accountId,
          modemUpstreamKey: ctx.config.MODEM_UPSTREAM_KEY,
        });
        if (exit.ok) {
          return new Tunnel(ctx, {
            principal: who,
            endpoint: picked.endpoint,
            hold: picked.hold,
            meter,
            exit: exit.socket,
            head: exit.head,
            exitReads: exit.onRead,
            log: log.child({
              endpointId: picked.endpoint.endpointId,
              deviceId: picked.endpoint.deviceId,
              pool: picked.endpoint.pool,
              target: `${checked.host}:${checked.port}`,
            }),
          });
        }
        await releaseHold(ctx.redis, picked.hold, ctx.now()).catch(() => {});
        void reportFailure(ctx, picked.endpoint, exit.reason);
        log.warn(
          { endpointId: picked.endpoint.endpointId, deviceId: picked.endpoint.deviceId, reason: exit.reason },
          "exit failed",
        );
        last = exit.error;
        this.#failed.push(picked.endpoint.endpointId);
        // A target the exit cannot reach will not be reachable from the next one either; a session
        // pins one device, so moving it silently would break the customer's stickiness; and a
        // dedicated key has no other endpoint to move to.
        if (exit.side === "target" || route.sid !== undefined || who.endpointId || route.pinDevice) break;
      }
      throw noneLeft();
    } catch (err) {
      await meter.close();
      throw err;
    }
  }
}

async function reportFailure(ctx: GatewayContext, endpoint: SelectedEndpoint, reason: string): Promise<void> {
  ctx.metrics.exitFailures++;
  const entry = JSON.stringify({
    endpointId: endpoint.endpointId,
    deviceId: endpoint.deviceId ?? null,
    kind: endpoint.kind,
    reason,
    gatewayId: ctx.config.GATEWAY_ID,
    at: ctx.now(),
  });
  await runScript(ctx.redis, tunnelFailure, [keys.tunnelFailures()], [entry, 10_000]).catch((err) =>
    ctx.log.warn(
      { endpointId: endpoint.endpointId, reason, err: (err as Error).message },
      "breaker report_failed",
    ),
  );
}
