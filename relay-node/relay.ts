import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { type AsnTable, parseAsnTable } from "../shared/asn.ts";
import { type SharedClock, startSharedClock } from "../shared/clock.ts";
import { listen } from "../shared/listen.node.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import {
  deviceBytesFlush,
  presenceKeepalive,
  presenceRefresh,
  presenceRemove,
} from "../shared/lua/scripts.gen.ts";
import type { TcpRedis } from "../shared/redis.node.ts";
import type { RelayConfig } from "./config.ts";
import { createByteCounters } from "./counters.ts";
import { heapGrowth } from "./heap.ts";
import { handleInternalRequest, handleInternalUpgrade } from "./internal.ts";
import { newMetrics, registerStateMetrics } from "./metrics.ts";
import { createPeerServer } from "./peers.ts";
import { refreshRelayInfo, removePresence, startPresenceLoop } from "./presence.ts";
import { type RevocationFeed, startGenerationSweep, startRevocationListener } from "./revocations.ts";
import type { RelayRedis, RelayState } from "./state.ts";
import { closeSession } from "./tunnels.ts";

export interface RelayDeps {
  redis: RelayRedis;
  /** Where revocations arrive while sockets are open (redisRevocationFeed); without it only the sweep. */
  revocations?: RevocationFeed;
  /** Structured log (default: JSON lines on stdout, warnings and errors only; main.ts logs info). */
  log?: Logger;
  /** This host's clock (default Date.now); shared deadlines follow Redis's, measured against it. */
  now?: () => number;
  /** Test seam: the shared clock itself (token expiry, presence), used as given. */
  sharedClock?: SharedClock;
}

export interface RunningRelay {
  relayId: string;
  wsUrl: string;
  internalUrl: string;
  /** Live state, for tests and diagnostics. */
  state: RelayState;
  /** Graceful: refuse new work, drain tunnels (bounded), 1001 to peers, flush counters, drop presence. */
  close(): Promise<void>;
}

/** The relay's Redis surface over a TCP client (HGET is not in the shared RedisClient). */
export function relayRedis(redis: TcpRedis): RelayRedis {
  return {
    get: redis.get,
    hset: redis.hset,
    expire: redis.expire,
    del: redis.del,
    eval: redis.eval,
    time: redis.time,
    evalsha: redis.evalsha,
    scriptLoad: redis.scriptLoad,
    hget: (key, field) => redis.raw.hget(key, field),
  };
}

/** Reads and parses RELAY_ASN_TABLE; a missing or broken file stops the start, naming the variable. */
function loadAsnTable(path: string): AsnTable {
  try {
    return parseAsnTable(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`RELAY_ASN_TABLE ${path}: ${(err as Error).message}`);
  }
}

function urlHost(host: string) {
  return host.includes(":") ? `[${host}]` : host;
}

/** Starts the peers' WebSocket port and the internal port; resolves once both listen. */
export async function startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay> {
  const log = deps.log ?? createLogger({ service: "relay", level: "warn" });
  const now = deps.now ?? Date.now;
  // Preloading makes EVALSHA hit on the first call, so commands keep their issue order (the
  // NOSCRIPT fallback would re-issue a script after later commands).
  await Promise.all(
    [presenceRefresh, presenceKeepalive, presenceRemove, deviceBytesFlush].map((s) =>
      deps.redis.scriptLoad(s.source),
    ),
  );

  const sharedClock =
    deps.sharedClock ?? (await startSharedClock({ serverTime: () => deps.redis.time(), local: now, log }));
  const metrics = newMetrics();
  const state: RelayState = {
    config,
    redis: deps.redis,
    log,
    now,
    sharedClock,
    metrics,
    counters: createByteCounters({
      redis: deps.redis,
      flushMs: config.COUNTER_FLUSH_MS,
      log,
      onFlush: (s) => metrics.counterFlushSeconds.observe(s),
      sharedNow: sharedClock.now,
    }),
    devices: new Map(),
    sessions: new Map(),
    publicUrl: "",
    internalUrl: "",
    draining: false,
    grownWindowBytes: 0,
    heapGrowth: heapGrowth(config.RELAY_HEAP_GROWING_PERCENT),
    ...(config.RELAY_ASN_TABLE ? { asnTable: loadAsnTable(config.RELAY_ASN_TABLE) } : {}),
  };

  registerStateMetrics(state);
  const peers = createPeerServer(state);
  const publicServer = createServer((_req, res) => {
    res.writeHead(426, { "content-type": "text/plain", upgrade: "websocket" });
    res.end("peerproxy relay: WebSocket only\n");
  });
  publicServer.on("upgrade", peers.onUpgrade);
  const internalServer = createServer((req, res) => handleInternalRequest(state, req, res));
  internalServer.on("upgrade", (req, socket, head) => handleInternalUpgrade(state, req, socket, head));

  const pub = await listen(publicServer, config.RELAY_PORT, config.RELAY_HOST);
  const int = await listen(internalServer, config.RELAY_INTERNAL_PORT, config.RELAY_INTERNAL_HOST);
  state.publicUrl = config.RELAY_PUBLIC_URL ?? `ws://${urlHost(config.RELAY_HOST)}:${pub.port}`;
  state.internalUrl =
    config.RELAY_INTERNAL_URL ?? `http://${urlHost(config.RELAY_INTERNAL_HOST)}:${int.port}`;

  state.counters.start();
  const stopPresence = startPresenceLoop(state);
  const stopSweep = startGenerationSweep(state, config.REVOCATION_SWEEP_MS);
  const stopListener = deps.revocations ? await startRevocationListener(state, deps.revocations) : undefined;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      state.draining = true;
      publicServer.close();
      await refreshRelayInfo(state).catch(() => {});
      const deadline = now() + config.DRAIN_TIMEOUT_MS;
      while (state.sessions.size > 0 && now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of [...state.sessions.values()]) closeSession(state, s, { notifyPeer: true, abort: true });
      const devices = [...state.devices.keys()];
      await peers.closeAll(2_000);
      peers.stop();
      stopPresence();
      stopSweep();
      await stopListener?.().catch(() => {});
      await state.counters.stop();
      sharedClock.stop();
      await Promise.all(devices.map((id) => removePresence(state, id).catch(() => {})));
      await state.redis.del(`relay:${config.RELAY_ID}`).catch(() => 0);
      internalServer.closeAllConnections();
      publicServer.closeAllConnections();
      await new Promise<void>((r) => internalServer.close(() => r()));
    })();
    return closing;
  };

  return { relayId: config.RELAY_ID, wsUrl: state.publicUrl, internalUrl: state.internalUrl, state, close };
}
