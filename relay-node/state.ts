import type { Socket } from "node:net";
import type { AsnTable } from "../shared/asn.ts";
import type { SharedClock } from "../shared/clock.ts";
import type { GrowingWindow } from "../shared/frame.ts";
import type { Logger } from "../shared/log.ts";
import type { RedisClient } from "../shared/redis.ts";
import type { RelayConfig } from "./config.ts";
import type { ByteCounters } from "./counters.ts";
import type { HeapGrowth } from "./heap.ts";
import type { Metrics } from "./metrics.ts";
import type { WireSocket } from "./wire.ts";

/** The Redis surface the relay needs; tcpRedis plus an HGET adapter satisfies it (see relay.ts). */
export interface RelayRedis
  extends Pick<RedisClient, "get" | "hset" | "expire" | "del" | "eval" | "evalsha" | "scriptLoad" | "time"> {
  hget(key: string, field: string): Promise<string | null>;
}

export interface Device {
  id: string;
  accountId: string;
  /** From the optional `ipType` JWT claim; the API decides it, the peer never does. */
  ipType: string;
  connectedAt: number;
  /**
   * From the `geo` JWT claim (the country the API saw the device connect from) when present;
   * otherwise what the peer said in `device_info`. Routing filters on it, so the API's view wins.
   */
  country: string;
  /** true when `country` came from the token: device_info may not change it */
  countryFromToken: boolean;
  carrier: string;
  sdkVersion: string;
  protocol: string;
  capabilities: string[];
  conns: Set<PeerConn>;
  /** Round-robin cursor so equally loaded sockets take turns. */
  nextConn: number;
  /**
   * touchPresence's write for this device: in flight, and touched again meanwhile ("again"), so
   * a device's sockets reconnecting together cost two writes, not two per socket.
   */
  presenceWrite: "busy" | "again" | undefined;
  /** Its last full presence write failed: the next tick writes it in full, not only keeps it alive. */
  presenceStale: boolean;
}

/** A peer's WebSocket (wire.ts), carrying its connection once authenticated. */
export type PeerWire = WireSocket<PeerConn>;

/** One WebSocket of a device. Protocol options are per socket: each socket sends its own device_info. */
export interface PeerConn {
  ws: PeerWire;
  device: Device;
  ip: string;
  /** Revocation generation of the token this socket authenticated with. */
  gen: number;
  /** Sent `protocol: "binary-v1"`: tunnel bytes travel as binary frames, else as base64 JSON. */
  binary: boolean;
  /** Listed `flow-v1` in capabilities: per-session credit windows instead of socket backpressure. */
  flow: boolean;
  supportsRedirect: boolean;
  /** device_info arrived, so binary/flow above are what the peer asked for. */
  infoReceived: boolean;
  lastFrameAt: number;
  /** The token's `exp` in ms: the idle sweep closes the socket with 4002 `expired` from then on. */
  expiresAt: number;
  /**
   * The collections below are created on first use: most sockets idle, and three empty
   * collections per socket cost ~0.5 KB each of tens of thousands of them.
   */
  sessions?: Map<string, Session>;
  /** Sessions whose gateway socket is paused until this WebSocket's send buffer drains. */
  waitingForWsDrain?: Set<Session>;
  /** Legacy backpressure: sessions whose slow gateway reader paused this whole WebSocket. */
  pausedBy?: Set<Session>;
}

export type SessionState = "connecting" | "open" | "closed";

/**
 * One tunnel. As a GrowingWindow (shared/frame.ts): `window` is the flow-v1 credit we keep the peer
 * at, INITIAL_WINDOW grown for a fast tunnel, and the epoch fields count the peer bytes of it that
 * have arrived.
 */
export interface Session extends GrowingWindow {
  id: string;
  conn: PeerConn;
  target: string;
  gw: Socket;
  state: SessionState;
  flow: boolean;
  openedAt: number;
  /** flow-v1: bytes we may still send to the peer. */
  sendCredit: number;
  /** flow-v1: bytes the peer may still send us before our next window update. */
  peerCredit: number;
  /** flow-v1: bytes written through to the gateway socket but not yet granted back. */
  drainedSinceGrant: number;
  /** Customer bytes read from the gateway socket and not yet sent (waiting for credit). */
  pendingToPeer: Buffer[];
  pendingBytes: number;
  gwEnded: boolean;
  /** flow-v1: the 0x02 half close went to the peer. */
  endSent: boolean;
  peerEnded: boolean;
  /** High-water mark of bytes this relay held for the session (both directions). */
  maxBuffered: number;
  /** The gateway's X-Request-ID, for log lines. */
  requestId: string;
  /** Counted for the device's earnings; false for the prober's own measurements (X-Traffic: probe). */
  billable: boolean;
  /** This tunnel's lines: every one carries requestId, deviceId and sessionId. */
  log: Logger;
  settle?: (outcome: OpenOutcome) => void;
}

export type OpenOutcome =
  | { ok: true }
  | { ok: false; status: number; body: { code: string; reason?: string; detail?: string } };

export interface RelayState {
  config: RelayConfig;
  redis: RelayRedis;
  log: Logger;
  /** This host's clock: socket timings (idle, setup). */
  now: () => number;
  /**
   * Redis's clock as this host reads it (shared/clock.ts), for times other hosts set or compare:
   * peer tokens' expiry (the API signs them), presence scores, the alive entry, the relay's record.
   */
  sharedClock: SharedClock;
  metrics: Metrics;
  counters: ByteCounters;
  devices: Map<string, Device>;
  sessions: Map<string, Session>;
  publicUrl: string;
  internalUrl: string;
  draining: boolean;
  /** flow-v1: bytes of window granted beyond INITIAL_WINDOW over all open sessions (capped). */
  grownWindowBytes: number;
  /** V8's heap growing factor follows the open tunnels (heap.ts) */
  heapGrowth: HeapGrowth;
  /** RELAY_ASN_TABLE, parsed: classifies each socket's own address (ADR 0011); absent = trust tokens */
  asnTable?: AsnTable;
}
