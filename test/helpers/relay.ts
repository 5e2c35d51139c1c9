import { join } from "node:path";
import { type Service, startProcess } from "../../dev/proc.ts";
import { peerToken } from "../../relay-node/testing/relay.ts";
import { randomHex } from "../../shared/ids.ts";
import { stateEnv } from "./env.ts";

const root = join(import.meta.dirname, "..", "..");

export interface RelayProcess {
  service: Service;
  relayId: string;
  wsUrl: string;
  internalUrl: string;
  /** A peer token this relay accepts for `deviceId`; `claims` override the defaults. */
  token(deviceId: string, claims?: Record<string, unknown>): Promise<string>;
  /** SIGTERM (graceful) by default; SIGKILL to model a crash. Resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * The real relay as a child process (`node relay-node/main.ts`) against the run's Redis, with
 * secrets of its own and OS-picked ports (`env` adds or overrides any), resolved once it prints its
 * ready line.
 */
export async function startRelayProcess(
  env: Record<string, string> = {},
  opts: { echo?: boolean; timeoutMs?: number } = {},
): Promise<RelayProcess> {
  const full = {
    REDIS_URL: stateEnv().REDIS_URL,
    JWT_SECRET: `jwt-${randomHex(16)}`,
    RELAY_SHARED_SECRET: `rss-${randomHex(16)}`,
    RELAY_PORT: "0",
    RELAY_INTERNAL_PORT: "0",
    RELAY_ID: `relay_proc_${randomHex(4)}`,
    ...env,
  };
  const service = startProcess("relay", process.execPath, [join(root, "relay-node", "main.ts")], {
    cwd: root,
    echo: opts.echo,
    env: full,
  });
  const m = await service.waitFor(
    /"relayId":"([^"]+)","ws":"([^"]+)","internal":"([^"]+)","msg":"relay ready"/,
    opts.timeoutMs ?? 15_000,
  );
  return {
    service,
    relayId: m[1]!,
    wsUrl: m[2]!,
    internalUrl: m[3]!,
    token: (deviceId, claims) => peerToken(deviceId, full.JWT_SECRET, claims),
    stop: (signal = "SIGTERM") => service.stop(signal, 10_000),
  };
}
