import type { PeerConfigInput } from "./config.ts";
import { resolveConfig } from "./config.ts";
import type { Lookup } from "./egress.ts";
import type { FetchLike } from "./identity.ts";
import { Peer, type PeerEvent, type PeerTiming } from "./peer.ts";

export { type BackoffPolicy, backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
export { type PeerConfig, type PeerConfigInput, parseCli, RANDOM_NAME_WARNING } from "./config.ts";
export { isBlockedAddress, resolveTarget } from "./egress.ts";
export { IdentityRejected } from "./identity.ts";
export { DEFAULT_TIMING, Peer, type PeerEvent, type PeerTiming } from "./peer.ts";
export { decideRedirect, relayDomain } from "./redirect.ts";
export { readState, writeState } from "./state.ts";
export { SDK_VERSION } from "./version.ts";

export interface StartPeerOptions extends PeerConfigInput {
  timing?: Partial<PeerTiming>;
  /** Where log lines go (default: console.log). Lines never contain tokens. */
  log?: (line: string) => void;
  fetch?: FetchLike;
  lookup?: Lookup;
}

export interface RunningPeer {
  readonly deviceId: string;
  /** Sockets open right now. */
  readonly openSockets: number;
  stop(): Promise<void>;
  on(event: PeerEvent, listener: (data: Record<string, unknown>) => void): RunningPeer;
  peer: Peer;
}

/**
 * Starts a peer in-process: registers (or resumes from the state file) and opens the relay sockets.
 * Resolves once the identity is known; sockets connect in the background (listen for "ack").
 */
export async function startPeer(options: StartPeerOptions): Promise<RunningPeer> {
  const { timing, log, fetch, lookup, ...rest } = options;
  const peer = new Peer({ config: resolveConfig(rest), timing, log, fetch, lookup });
  await peer.start();
  const running: RunningPeer = {
    get deviceId() {
      return peer.deviceId;
    },
    get openSockets() {
      return peer.openSockets;
    },
    stop: () => peer.stop(),
    on(event, listener) {
      peer.on(event, listener);
      return running;
    },
    peer,
  };
  return running;
}
