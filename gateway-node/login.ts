/**
 * Login and tunnel in one Redis round trip for a key this gateway has let in before (ADR 0033).
 *
 * A first login waits for Redis twice before the exit is asked: the login (cred_auth), then the
 * byte lease and the endpoint pick, which need the key's id, pool and limits. A returning key's
 * secret names the same key id (a secret is never moved to another key), so the gateway keeps what
 * the last login said and sends all three together. The login is still read in full and checked
 * first, by the same code as ever: a refusal gives the hold and the lease straight back and answers
 * with the login's own error, and a key whose pool or limits changed since is picked for again with
 * what Redis says now. What is kept is only ever a guess that saves a round trip; nothing is let in
 * on it.
 */
import type { Socket } from "node:net";
import { parseUsername } from "../shared/dsl.ts";
import { authenticate, type Principal, routeFor, secretHash } from "./auth.ts";
import type { Target } from "./exits.ts";
import { type GatewayContext, openTunnel, type Tunnel } from "./tunnel.ts";

/** The last successful login per secret (by its SHA-256, as Redis keeps it), oldest evicted first. */
export class LoginCache {
  readonly #byHash = new Map<string, Principal>();
  readonly #max: number;
  constructor(max = 10_000) {
    this.#max = max;
  }

  get size(): number {
    return this.#byHash.size;
  }

  remember(hash: string, principal: Principal): void {
    this.#byHash.delete(hash);
    this.#byHash.set(hash, principal);
    if (this.#byHash.size > this.#max) this.#byHash.delete(this.#byHash.keys().next().value!);
  }

  forget(hash: string): void {
    this.#byHash.delete(hash);
  }

  /**
   * What the last login of this secret would let `username` use, if it let it in at all: its key
   * and limits as they were, the route this username asks for. Undefined for a username that does
   * not parse or names another account: that login is refused or answered in the usual order.
   */
  guess(hash: string, username: string): Principal | undefined {
    const last = this.#byHash.get(hash);
    if (!last) return undefined;
    let route: ReturnType<typeof parseUsername>;
    try {
      route = parseUsername(username);
    } catch {
      return undefined;
    }
    if (route.account !== last.accountLabel.toLowerCase()) return undefined;
    return { ...last, route: routeFor(route, last.tier) };
  }
}

type Credentials = { username: string; password: string };

/**
 * Starts a login (authenticate) that the cache learns from, and says what the cache guesses for
 * it: a principal to send the lease and the pick with, beside the login, or undefined.
 */
export function startLogin(
  ctx: GatewayContext,
  input: { credentials: Credentials | undefined; clientIp: string },
): { login: Promise<Principal>; guess: Principal | undefined } {
  const hash = input.credentials ? secretHash(input.credentials.password) : undefined;
  const login = authenticate(
    { redis: ctx.redis, now: ctx.now, authFailLimit: ctx.config.GATEWAY_AUTH_FAIL_LIMIT },
    { ...input, hash },
  ).then(
    (principal) => {
      if (hash) ctx.logins.remember(hash, principal);
      return principal;
    },
    (err: unknown) => {
      if (hash) ctx.logins.forget(hash);
      throw err;
    },
  );
  const guess = hash && input.credentials ? ctx.logins.guess(hash, input.credentials.username) : undefined;
  return { login, guess };
}

/**
 * authenticate + openTunnel (HTTP), with the login sent beside the lease and the pick when this
 * secret logged in here before. The handshake is over once the login itself is accepted.
 */
export async function loginAndOpen(
  ctx: GatewayContext,
  input: { credentials: Credentials | undefined; clientIp: string; socket: Socket },
  target: Target,
  requestId: string,
): Promise<Tunnel> {
  const { login, guess } = startLogin(ctx, input);
  const accepted = login.then((principal) => {
    ctx.handshakes.done(input.socket);
    return principal;
  });
  if (!guess) return openTunnel(ctx, await accepted, target, requestId);
  accepted.catch(() => {}); // awaited by openTunnel before anything is answered
  return openTunnel(ctx, guess, target, requestId, accepted);
}
