import { EventEmitter } from "node:events";
import { type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.ts";
import type { PeerConfig } from "./config.ts";
import type { Lookup } from "./egress.ts";
import { createIdentityManager, type FetchLike, type IdentityManager, IdentityRejected } from "./identity.ts";
import { decideRedirect, REDIRECT_COOLDOWN_MS, relayDomain } from "./redirect.ts";
import { RelaySocket, type SocketPool } from "./socket.ts";

/** Timings; production defaults from PROTOCOL.md, overridable so tests do not wait minutes. */
export interface PeerTiming {
  backoff: BackoffPolicy;
  heartbeatMs: number;
  connectTimeoutMs: number;
  redirectCooldownMs: number;
  /** Failed connects in a row on one socket before the device asks the API for a relay (2). */
  failoverAfterFailures: number;
  /** At most one relay check per this many ms (30 s), so a dead relay cannot cause a refresh storm. */
  failoverCheckMs: number;
}

export const DEFAULT_TIMING: PeerTiming = {
  backoff: DEFAULT_BACKOFF,
  heartbeatMs: 30_000,
  connectTimeoutMs: 10_000,
  redirectCooldownMs: REDIRECT_COOLDOWN_MS,
  failoverAfterFailures: 2,
  failoverCheckMs: 30_000,
};

export type PeerEvent =
  | "registered"
  | "connected"
  | "ack"
  | "disconnected"
  | "renewed"
  | "redirect"
  | "failover"
  | "tunnel_connect"
  | "tunnel_failed"
  | "tunnel_closed"
  | "log";

export interface PeerDeps {
  config: PeerConfig;
  timing?: Partial<PeerTiming>;
  log?: (line: string) => void;
  fetch?: FetchLike;
  lookup?: Lookup;
}

/** A running device: identity, N relay sockets, redirect policy. */
export class Peer {
  readonly config: PeerConfig;
  readonly timing: PeerTiming;
  readonly identity: IdentityManager;
  #events = new EventEmitter();
  #sockets: RelaySocket[] = [];
  #relayUrl = "";
  #allowlist: string[] = [];
  #lastRedirectAt: number | undefined;
  /** No relay check before this (ms): a check's interval, or a Retry-After after one that failed. */
  #nextFailoverCheckAt = 0;
  #failoverChecking = false;
  /** Relay checks in a row the API did not answer: each waits twice as long as the one before. */
  #unansweredChecks = 0;
  #failoverTimer: NodeJS.Timeout | undefined;
  #print: (line: string) => void;
  #lookup: Lookup | undefined;
  #stopping: Promise<void> | undefined;

  constructor(deps: PeerDeps) {
    this.config = deps.config;
    this.timing = { ...DEFAULT_TIMING, ...deps.timing };
    this.#print = deps.log ?? ((line) => console.log(line));
    this.#lookup = deps.lookup;
    this.identity = createIdentityManager({
      config: deps.config,
      fetch: deps.fetch,
      log: (l) => this.log(l),
    });
  }

  get deviceId(): string {
    return this.identity.current?.deviceId ?? "";
  }

  get relayUrl(): string {
    return this.#relayUrl;
  }

  /** Sockets currently open to the relay. */
  get openSockets(): number {
    return this.#sockets.filter((s) => s.open).length;
  }

  on(event: PeerEvent, listener: (data: Record<string, unknown>) => void): this {
    this.#events.on(event, listener);
    return this;
  }

  log(line: string): void {
    this.#print(line);
    this.#events.emit("log", { line });
  }

  verbose(line: string): void {
    if (this.config.verbose) this.log(line);
    else this.#events.emit("log", { line, verbose: true });
  }

  /** Registers (or resumes) and opens the sockets. Rejects with IdentityRejected on a bad key etc. */
  async start(): Promise<void> {
    const { identity, resumed } = await this.#acquireWithRetry();
    if (this.#stopping) return;
    this.#relayUrl = this.config.relayUrl ?? identity.relay;
    this.#allowlist = this.config.relayAllowlist.length
      ? this.config.relayAllowlist
      : [relayDomain(identity.relay)];
    this.log(
      `[REGISTERED] device=${identity.deviceId} relay=${this.#relayUrl} sockets=${this.config.connections}`,
    );
    if (identity.ipType) this.verbose(`[IDENTITY] ipType=${identity.ipType} resumed=${resumed}`);
    this.#events.emit("registered", { deviceId: identity.deviceId, relay: this.#relayUrl, resumed });
    const pool = this.#poolView();
    for (let i = 1; i <= this.config.connections; i++) this.#sockets.push(new RelaySocket(pool, i));
    for (const s of this.#sockets) s.start();
  }

  /** The API may be briefly away (deploy, 429); a fleet should wait for it rather than crash-loop. */
  async #acquireWithRetry() {
    for (let attempt = 0; ; attempt++) {
      if (this.#stopping) throw new Error("peer stopped before it registered");
      try {
        return await this.identity.acquire();
      } catch (err) {
        // A refused key or an unwritable state file will not fix itself: stop instead of looping.
        if (err instanceof IdentityRejected || isLocalFsError(err)) throw err;
        const hinted = (err as { retryAfterMs?: number }).retryAfterMs ?? 0;
        const delay = Math.max(hinted, Math.min(60_000, 1000 * 2 ** attempt));
        this.log(`[API] ${(err as Error).message}; retrying in ${Math.round(delay / 1000)} s`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  #poolView(): SocketPool {
    const peer = this;
    return {
      get deviceId() {
        return peer.deviceId;
      },
      country: this.config.country,
      get relayUrl() {
        return peer.#relayUrl;
      },
      get jwt() {
        return peer.identity.current?.jwt ?? "";
      },
      backoff: this.timing.backoff,
      heartbeatMs: this.timing.heartbeatMs,
      connectTimeoutMs: this.timing.connectTimeoutMs,
      allowPrivateTargets: this.config.allowPrivateTargets,
      lookup: this.#lookup,
      log: (line) => this.log(line),
      verbose: (line) => this.verbose(line),
      renewIdentity: (stale) => this.#renew(stale),
      onRedirect: (target, reason) => this.#onRedirect(target, reason),
      onConnectFailed: (consecutive) => this.#onConnectFailed(consecutive),
      emit: (event, data) => this.#events.emit(event, data),
    };
  }

  async #renew(staleJwt: string): Promise<boolean> {
    const before = this.identity.renewals;
    try {
      await this.identity.renew(staleJwt);
      if (this.identity.renewals !== before) {
        this.log(`[REFRESHED] device=${this.deviceId} token renewed for all sockets`);
        this.#events.emit("renewed", { deviceId: this.deviceId, renewals: this.identity.renewals });
      }
      return true;
    } catch (err) {
      this.log(`[REFRESH_FAILED] ${(err as Error).message}`);
      return false;
    }
  }

  #onRedirect(target: unknown, reason: unknown): void {
    const decision = decideRedirect(target, {
      pinned: this.config.relayUrl !== undefined,
      allowlist: this.#allowlist,
      currentRelay: this.#relayUrl,
      lastRedirectAt: this.#lastRedirectAt,
      now: Date.now(),
      cooldownMs: this.timing.redirectCooldownMs,
    });
    if (!decision.follow) {
      this.verbose(`[REDIRECT_IGNORED] target=${String(target)} why=${decision.reason}`);
      return;
    }
    this.#lastRedirectAt = Date.now();
    this.#relayUrl = decision.target;
    this.identity.setRelay(decision.target);
    this.log(`[REDIRECT] relay=${decision.target} reason=${String(reason ?? "unspecified")}`);
    this.#events.emit("redirect", { relay: decision.target, reason });
    for (const s of this.#sockets) s.moveToCurrentRelay();
  }

  /**
   * Failover (docs/protocol.md, "Reconnect"): a socket that failed to reach the relay
   * `failoverAfterFailures` times in a row makes the device ask the API, through the refresh it
   * makes anyway, which relay it should use. One check in flight, one per `failoverCheckMs`; a
   * relay pinned by configuration is never left.
   */
  #onConnectFailed(consecutive: number): void {
    if (consecutive < this.timing.failoverAfterFailures) return;
    if (this.config.relayUrl !== undefined || this.#stopping || this.#failoverChecking) return;
    if (Date.now() >= this.#nextFailoverCheckAt) this.#startRelayCheck();
    else this.#armRelayRecheck();
  }

  /**
   * Too soon after a check that still named this relay (a killed relay stays listed alive for a
   * few seconds), or after one the API could not answer: check again the moment that wait is over,
   * not at some socket's next attempt, which with a doubled backoff can be a minute later.
   */
  #armRelayRecheck(): void {
    if (this.#failoverTimer) return;
    this.#failoverTimer = setTimeout(
      () => {
        this.#failoverTimer = undefined;
        const stillFailing = this.#sockets.some(
          (s) => s.connectFailures >= this.timing.failoverAfterFailures,
        );
        if (stillFailing && !this.#stopping && !this.#failoverChecking) this.#startRelayCheck();
      },
      Math.max(0, this.#nextFailoverCheckAt - Date.now()),
    );
    this.#failoverTimer.unref();
  }

  #startRelayCheck(): void {
    clearTimeout(this.#failoverTimer);
    this.#failoverTimer = undefined;
    this.#nextFailoverCheckAt = Date.now() + this.timing.failoverCheckMs;
    this.#failoverChecking = true;
    void this.#checkRelay().finally(() => {
      this.#failoverChecking = false;
    });
  }

  async #checkRelay(): Promise<void> {
    const from = this.#relayUrl;
    let assigned: string | undefined;
    try {
      assigned = await this.identity.reassign();
    } catch (err) {
      this.log(`[FAILOVER_CHECK_FAILED] ${(err as Error).message}`);
      // No answer (network, 408, 429, 5xx): the interval is for answers that named a live relay, so
      // ask again sooner: a fifteenth of it (2 s by default), doubling while the API stays away, never
      // before its Retry-After, plus up to half again so a fleet spreads out; at most the interval.
      if (!(err instanceof IdentityRejected) && !this.#stopping) {
        const hinted = (err as { retryAfterMs?: number }).retryAfterMs ?? 0;
        const backoff = (this.timing.failoverCheckMs / 15) * 2 ** Math.min(this.#unansweredChecks++, 10);
        const wait = Math.max(hinted, backoff);
        this.#nextFailoverCheckAt =
          Date.now() + Math.min(this.timing.failoverCheckMs, wait * (1 + Math.random() / 2));
        this.#armRelayRecheck();
      }
      return;
    }
    this.#unansweredChecks = 0;
    // Stopped, or a redirect moved us while the call was out: that move stands.
    if (this.#stopping || this.#relayUrl !== from) return;
    if (!assigned || assigned === from) {
      this.verbose(`[FAILOVER_CHECK] relay=${from} is still the assigned relay; backing off`);
      return;
    }
    this.#relayUrl = assigned;
    this.identity.setRelay(assigned);
    this.log(`[FAILOVER] relay=${assigned}`);
    this.#events.emit("failover", { relay: assigned, from });
    for (const s of this.#sockets) s.moveToCurrentRelay();
  }

  /** Closes every socket (1000) and its tunnels; no reconnects afterwards. Idempotent. */
  stop(): Promise<void> {
    clearTimeout(this.#failoverTimer);
    this.#stopping ??= Promise.all(this.#sockets.map((s) => s.stop())).then(() => {
      this.log(`[STOPPED] device=${this.deviceId}`);
    });
    return this.#stopping;
  }
}

function isLocalFsError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (
    typeof code === "string" &&
    ["EACCES", "EPERM", "EROFS", "ENOSPC", "EISDIR", "ENOTDIR", "EEXIST"].includes(code)
  );
}
