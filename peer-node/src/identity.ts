import type { PeerConfig } from "./config.ts";
import { readState, writeState } from "./state.ts";
import { SDK_VERSION } from "./version.ts";

/** The live identity of this device: the JWT the sockets present and what renews it. */
export interface Identity {
  deviceId: string;
  jwt: string;
  refreshToken: string;
  /** The relay the API assigned (or the one we were redirected to). */
  relay: string;
  earningsPerGB?: Record<string, string>;
  ipType?: string;
}

/** An API answer that retrying will not fix (bad key, bad field, account limit). */
export class IdentityRejected extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "IdentityRejected";
    this.status = status;
  }
}

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface IdentityDeps {
  config: PeerConfig;
  fetch?: FetchLike;
  log: (line: string) => void;
}

export interface IdentityManager {
  readonly current: Identity | undefined;
  /** Start-up: refresh from the saved state, else register. Saves the state file. */
  acquire(): Promise<{ identity: Identity; resumed: boolean }>;
  /**
   * Renews the JWT after a 4001/4002. Single-flight: every socket that saw `staleJwt` rejected
   * shares one API call; a socket whose token was already replaced gets the new one for free.
   */
  renew(staleJwt: string): Promise<Identity>;
  /**
   * Failover check: one refresh (after any renewal in flight) that also renews the JWT; resolves
   * with the relay the API assigns now, or undefined from an API that does not say.
   */
  reassign(): Promise<string | undefined>;
  /** Records a followed redirect or failover so a restart goes straight to the new relay. */
  setRelay(relay: string): void;
  /** How many refresh/register calls renew() made (tests assert exactly one per expiry). */
  readonly renewals: number;
}

async function postJson(doFetch: FetchLike, url: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await doFetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {}
  if (!res.ok) {
    const err = json["error"] as { code?: string; message?: string } | undefined;
    const what = err?.message ? `${err.code ?? res.status}: ${err.message}` : `HTTP ${res.status}`;
    // 408/429/5xx are the API's trouble or a pause it asked for; the rest is ours to fix.
    if (res.status !== 408 && res.status !== 429 && res.status < 500)
      throw new IdentityRejected(res.status, what);
    const retry = Number(res.headers.get("retry-after"));
    throw Object.assign(new Error(what), {
      retryAfterMs: Number.isFinite(retry) && retry > 0 ? retry * 1000 : 0,
    });
  }
  return json;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v.length > 0 ? v : undefined;
}

export function createIdentityManager(deps: IdentityDeps): IdentityManager {
  const { config, log } = deps;
  const doFetch: FetchLike = deps.fetch ?? ((url, init) => fetch(url, init));
  let current: Identity | undefined;
  let inflight: Promise<Identity> | undefined;
  let renewals = 0;

  const save = (id: Identity) =>
    writeState(config.stateFile, { deviceId: id.deviceId, refreshToken: id.refreshToken, relay: id.relay });

  /** The relay the API named in its last refresh or registration answer. */
  let assignedRelay: string | undefined;

  async function refresh(deviceId: string, refreshToken: string, relay: string): Promise<Identity> {
    const body = await postJson(
      doFetch,
      `${config.apiUrl}/v1/peer/agents/${encodeURIComponent(deviceId)}/refresh`,
      { refreshToken },
    );
    const jwt = str(body["jwt"]) ?? str(body["token"]);
    if (!jwt) throw new Error("refresh answer without a token");
    assignedRelay = str(body["relay"]);
    // The identity keeps the relay we are on; only a failover check acts on the assigned one.
    return { deviceId, jwt, refreshToken: str(body["refreshToken"]) ?? refreshToken, relay };
  }

  async function register(): Promise<Identity> {
    const body = await postJson(doFetch, `${config.apiUrl}/v1/peer/agents/register`, {
      name: config.name,
      apiKey: config.apiKey,
      type: "custom",
      sdkVersion: SDK_VERSION,
      country: config.country,
      ...(config.wallet ? { walletAddress: config.wallet } : {}),
    });
    const deviceId = str(body["deviceId"]);
    const jwt = str(body["jwt"]) ?? str(body["token"]);
    const refreshToken = str(body["refreshToken"]);
    const relay = str(body["relay"]);
    if (!deviceId || !jwt || !refreshToken || !relay)
      throw new Error("registration answer is missing fields");
    assignedRelay = relay;
    return {
      deviceId,
      jwt,
      refreshToken,
      relay,
      earningsPerGB: body["earningsPerGB"] as Record<string, string> | undefined,
      ipType: str(body["ipType"]),
    };
  }

  /** Refresh if we can, register otherwise (same key + name => same device, so this is safe). */
  async function obtain(from: { deviceId: string; refreshToken: string; relay: string } | undefined) {
    if (from) {
      try {
        return { identity: await refresh(from.deviceId, from.refreshToken, from.relay), resumed: true };
      } catch (err) {
        // Only a refused refresh token means registering again. An API that could not answer
        // (network, 408, 429, 5xx) would not answer a registration either, and a fleet that
        // registered on every busy answer would double the calls of a storm.
        if (!(err instanceof IdentityRejected)) throw err;
        log(`[IDENTITY] refresh failed (${(err as Error).message}); registering again`);
      }
    }
    return { identity: await register(), resumed: false };
  }

  /** One refresh (or registration) call, shared by every caller until it settles. */
  function exchange(): Promise<Identity> {
    inflight = obtain(current)
      .then(({ identity }) => {
        // The relay we are on stays ours (a followed redirect or failover, even one that happened
        // while this call was out); a refresh does not move us by itself.
        current = current ? { ...identity, relay: current.relay } : identity;
        save(current);
        return current;
      })
      .finally(() => {
        inflight = undefined;
      });
    return inflight;
  }

  return {
    get current() {
      return current;
    },
    get renewals() {
      return renewals;
    },
    async acquire() {
      const result = await obtain(readState(config.stateFile));
      current = result.identity;
      save(current);
      return result;
    },
    renew(staleJwt) {
      if (current && current.jwt !== staleJwt) return Promise.resolve(current);
      if (inflight) return inflight;
      renewals++;
      return exchange();
    },
    async reassign() {
      while (inflight) await inflight.catch(() => {});
      await exchange();
      return assignedRelay;
    },
    setRelay(relay) {
      if (!current) return;
      current = { ...current, relay };
      save(current);
    },
  };
}
