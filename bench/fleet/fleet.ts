// The fleet simulator: N virtual devices in this process, each the real peer SDK (peer-node:
// registration through the API, authenticated relay WebSockets speaking binary-v1 + flow-v1, real
// TCP exits). What a device is told to be (country hint, sockets) and how its exit misbehaves
// (slow, stalling, TLS-dropping, flapping) come from the settings; nothing here re-implements the
// protocol. Loopback only: exits reach targets through the fault shims in ./shims.ts.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type RunningPeer, startPeer } from "../../peer-node/src/index.ts";
import type { Behaviour } from "./shims.ts";

export interface FleetSettings {
  apiUrl: string;
  /** a `supply` key; the API's register rate limit must allow the fleet (dev vars, never production) */
  apiKey: string;
  devices: number;
  /** relay WebSockets per device (the SDK's connections, 1-8) */
  socketsPerDevice: number;
  /** country hint -> weight, e.g. {US: 3, DE: 1}; registration places devices by it (ADR 0023) */
  countries: Record<string, number>;
  /** behaviour -> share of devices (the rest behave); flapping devices restart every flapMs */
  misbehaviour?: Partial<Record<Behaviour | "flapping", number>>;
  flapMs?: number;
  /** where the SDK keeps each device's state file (a tmpfs is kindest: one fsync per registration) */
  stateDir: string;
  /** device names are `${namePrefix}-${i}`: the same prefix resumes the same devices */
  namePrefix: string;
  /** registrations in flight at once */
  concurrency?: number;
  heartbeatMs?: number;
  /** each device's exit resolves target host names to its behaviour's loopback address (./shims.ts) */
  shimAddress: (b: Behaviour) => string;
}

export interface SimulatedDevice {
  index: number;
  name: string;
  country: string;
  behaviour: Behaviour;
  flapping: boolean;
  peer: RunningPeer | undefined;
  deviceId: string;
  acks: number;
}

export interface Fleet {
  devices: SimulatedDevice[];
  /** sockets the relays acknowledged and that are still open */
  openSockets(): number;
  /** resolves once every non-flapping device holds all its sockets */
  waitConnected(timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
  /** every device's failover steps ([FAILOVER], [FAILOVER_CHECK], [FAILOVER_CHECK_FAILED]), in order */
  failoverEvents: FailoverEvent[];
}

export interface FailoverEvent {
  at: number;
  device: string;
  kind: string;
  line: string;
}

/**
 * Deterministic spread (largest remainder): after any prefix of i devices each kind holds its
 * share within one device, so a fleet of 4 with four kinds at 1/4 gets one of each.
 */
function spread<T extends string>(weights: Record<T, number>, n: number, fallback: T): T[] {
  const entries = (Object.entries(weights) as [T, number][]).filter(([, w]) => w > 0);
  const total = entries.reduce((s, [, w]) => s + w, 0);
  if (total <= 0) return Array.from({ length: n }, () => fallback);
  const given = new Map<T, number>(entries.map(([k]) => [k, 0]));
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    let best = entries[0]![0];
    let bestOwed = Number.NEGATIVE_INFINITY;
    for (const [k, w] of entries) {
      const owed = ((i + 1) * w) / total - given.get(k)!;
      if (owed > bestOwed) [best, bestOwed] = [k, owed];
    }
    given.set(best, given.get(best)! + 1);
    out.push(best);
  }
  return out;
}

/** Registers and connects the fleet; resolves once every device registered (sockets follow). */
export async function startFleet(s: FleetSettings): Promise<Fleet> {
  mkdirSync(s.stateDir, { recursive: true });
  const mis = s.misbehaviour ?? {};
  // Flapping devices have good exits; the others misbehave in their exit's network only.
  const roles = spread<Behaviour | "flapping">(
    {
      good: Math.max(0, 1 - (mis.slow ?? 0) - (mis.stall ?? 0) - (mis.tlsDrop ?? 0) - (mis.flapping ?? 0)),
      slow: mis.slow ?? 0,
      stall: mis.stall ?? 0,
      tlsDrop: mis.tlsDrop ?? 0,
      flapping: mis.flapping ?? 0,
    },
    s.devices,
    "good",
  );
  const countries = spread(s.countries, s.devices, "US");
  const devices: SimulatedDevice[] = roles.map((role, i) => ({
    index: i,
    name: `${s.namePrefix}-${i}`,
    country: countries[i]!,
    behaviour: role === "flapping" ? "good" : role,
    flapping: role === "flapping",
    peer: undefined,
    deviceId: "",
    acks: 0,
  }));
  let stopped = false;
  const failoverEvents: FailoverEvent[] = [];
  const flapTimers = new Set<NodeJS.Timeout>();

  const launch = async (d: SimulatedDevice) => {
    const shim = s.shimAddress(d.behaviour);
    const peer = await startPeer({
      apiKey: s.apiKey,
      apiUrl: s.apiUrl,
      name: d.name,
      country: d.country,
      connections: s.socketsPerDevice,
      stateFile: join(s.stateDir, `${d.name}.json`),
      allowPrivateTargets: true,
      log: () => {},
      timing: s.heartbeatMs ? { heartbeatMs: s.heartbeatMs } : undefined,
      // Every target name resolves to this device's shim: its exit's "network" (./shims.ts).
      lookup: async () => [{ address: shim, family: 4 }],
    });
    d.peer = peer;
    d.deviceId = peer.deviceId;
    peer.on("ack", () => d.acks++);
    // The failover's steps, timed: what fault d's figure is made of (printed by main.ts).
    peer.on("log", (data) => {
      const line = String(data["line"]);
      const kind = /^\[(FAILOVER\w*)\]/.exec(line)?.[1];
      if (kind) failoverEvents.push({ at: Date.now(), device: d.name, kind, line });
    });
    peer.on("disconnected", () => (d.acks = Math.max(0, d.acks - 1)));
  };

  const flap = (d: SimulatedDevice) => {
    const every = s.flapMs ?? 20_000;
    const t = setTimeout(
      async () => {
        flapTimers.delete(t);
        if (stopped) return;
        await d.peer?.stop();
        d.acks = 0;
        if (stopped) return;
        await launch(d).catch(() => {});
        flap(d);
      },
      every / 2 + Math.random() * every,
    );
    flapTimers.add(t);
  };

  let next = 0;
  const worker = async () => {
    while (!stopped && next < devices.length) {
      const d = devices[next++]!;
      await launch(d);
      if (d.flapping) flap(d);
    }
  };
  await Promise.all(Array.from({ length: s.concurrency ?? 16 }, worker));

  return {
    devices,
    failoverEvents,
    openSockets: () => devices.reduce((n, d) => n + (d.peer?.openSockets ?? 0), 0),
    async waitConnected(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      const steady = devices.filter((d) => !d.flapping);
      while (steady.some((d) => (d.peer?.openSockets ?? 0) < s.socketsPerDevice)) {
        if (Date.now() > deadline) {
          const short = steady.filter((d) => (d.peer?.openSockets ?? 0) < s.socketsPerDevice).length;
          throw new Error(`${short} of ${steady.length} devices not fully connected after ${timeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    async stop() {
      stopped = true;
      for (const t of flapTimers) clearTimeout(t);
      for (let i = 0; i < devices.length; i += 500)
        await Promise.all(devices.slice(i, i + 500).map((d) => d.peer?.stop()));
    },
  };
}
