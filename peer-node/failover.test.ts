import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { type RunningPeer, readState, type StartPeerOptions, startPeer } from "./src/index.ts";
import {
  type StandinApi,
  type StandinRelay,
  startStandinApi,
  startStandinRelay,
} from "./testing/standins.ts";

// The SDK's failover rule (docs/protocol.md "Reconnect and failover") against scripted stand-ins:
// which connect failures count, one relay check per device per interval, pinned relays stay.
// test/relay-failover.test.ts runs it end to end against real relays and the real API.

const tmp = mkdtempSync(join(tmpdir(), "peer-failover-"));
const fast = {
  backoff: { baseMs: 50, maxMs: 400, jitterMs: 20, stableMs: 60_000 },
  heartbeatMs: 200,
  connectTimeoutMs: 2_000,
  failoverCheckMs: 500,
};

/** A relay URL that refuses connections: a stand-in's port, closed. */
let deadUrl = "";
let live: StandinRelay;
let api: StandinApi;
const peers: RunningPeer[] = [];

beforeAll(async () => {
  const dead = await startStandinRelay();
  deadUrl = dead.url;
  await dead.close();
  live = await startStandinRelay();
  api = await startStandinApi(deadUrl);
});
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.stop()));
  api.relay = deadUrl;
  delete api.refreshRelay;
  delete api.refreshBusy;
  delete api.refreshBusyNoHint;
});
afterAll(async () => {
  await live.close();
  await api.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function start(extra: Partial<StartPeerOptions> = {}) {
  const lines: string[] = [];
  const stateFile = join(tmp, `${randomBytes(4).toString("hex")}.json`);
  const peer = await startPeer({
    apiKey: `psx_${randomBytes(4).toString("hex")}`,
    name: `rig-${randomBytes(3).toString("hex")}`,
    apiUrl: api.url,
    stateFile,
    timing: fast,
    log: (l) => lines.push(l),
    ...extra,
  });
  peers.push(peer);
  const refreshes = () =>
    api.calls.filter((c) => c.path === `/v1/peer/agents/${peer.deviceId}/refresh`).length;
  return { peer, lines, stateFile, refreshes };
}

const openOn = (relay: StandinRelay) => relay.conns.filter((c) => c.ws.readyState === c.ws.OPEN).length;

describe("dead-relay failover", () => {
  it("after two refused connects the device asks once and moves every socket to the relay the refresh names", async () => {
    api.refreshRelay = live.url;
    const before = openOn(live);
    const { peer, lines, stateFile, refreshes } = await start({ connections: 2 });
    await waitUntil(async () => openOn(live) - before === 2, 5_000, "both sockets on the live relay");
    expect(peer.peer.relayUrl).toBe(live.url);
    expect(lines.filter((l) => l.startsWith("[FAILOVER]"))).toEqual([`[FAILOVER] relay=${live.url}`]);
    expect(refreshes()).toBe(1);
    expect(readState(stateFile)).toMatchObject({ deviceId: peer.deviceId, relay: live.url });
  });

  it("a relay that closes before `connected` counts as a failed connect too", async () => {
    const closing = await startStandinRelay();
    closing.onConn((c) => c.ws.close(1013, "try again later"));
    try {
      api.relay = closing.url;
      api.refreshRelay = live.url;
      const { peer, refreshes } = await start({ connections: 1 });
      await waitUntil(async () => peer.peer.relayUrl === live.url, 5_000, "failover");
      expect(refreshes()).toBe(1);
    } finally {
      await closing.close();
    }
  });

  it("while the API still names the same relay the device stays, backing off, with one check per interval", async () => {
    api.refreshRelay = deadUrl;
    const { peer, lines, refreshes } = await start({ connections: 4 });
    await new Promise((r) => setTimeout(r, 1_300));
    // Four sockets failing every few hundred ms, checks at most every 500 ms: 2 or 3, never 4 per round.
    expect(refreshes()).toBeGreaterThanOrEqual(2);
    expect(refreshes()).toBeLessThanOrEqual(3);
    expect(peer.peer.relayUrl).toBe(deadUrl);
    expect(lines.some((l) => l.startsWith("[FAILOVER]"))).toBe(false);
  });

  it("a check that still names the dead relay is repeated once the interval is over, and that one moves the device", async () => {
    api.refreshRelay = deadUrl;
    // Failures at 0 and 300 ms (the check), the third 900-1200 ms inside the 1 s interval, the
    // fourth not before 2.1 s: the re-check at 1.3 s is the deferred one.
    const slow = {
      ...fast,
      failoverCheckMs: 1_000,
      backoff: { baseMs: 300, maxMs: 5_000, jitterMs: 0, stableMs: 60_000 },
    };
    const { peer, refreshes } = await start({ connections: 1, timing: slow });
    await waitUntil(async () => refreshes() === 1, 5_000, "the first relay check");
    api.refreshRelay = live.url;
    const t0 = Date.now();
    await waitUntil(async () => peer.peer.relayUrl === live.url, 5_000, "the second check to move it");
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(refreshes()).toBe(2);
  });

  it("a check the API cannot answer now (503) is retried after its Retry-After, not the interval, and never registers again", async () => {
    api.refreshRelay = live.url;
    api.refreshBusy = 1;
    const slow = { ...fast, failoverCheckMs: 10_000 };
    const { peer, lines, refreshes } = await start({ connections: 1, timing: slow });
    await waitUntil(async () => refreshes() === 1, 5_000, "the first relay check");
    const t0 = Date.now();
    await waitUntil(async () => peer.peer.relayUrl === live.url, 5_000, "the retried check to move it");
    // Retry-After: 1 plus the SDK's jitter, far inside the 10 s interval.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(refreshes()).toBe(2);
    // A busy API is no reason to register again: that doubles the calls of a storm.
    const registers = api.calls.filter(
      (c) => c.path === "/v1/peer/agents/register" && c.body["name"] === peer.peer.config.name,
    );
    expect(registers.length).toBe(1);
    expect(lines.filter((l) => l.startsWith("[FAILOVER_CHECK_FAILED]"))).toHaveLength(1);
  });

  it("checks the API keeps not answering wait twice as long each time, and one that is answered moves the device", async () => {
    api.refreshRelay = live.url;
    api.refreshBusy = 3;
    api.refreshBusyNoHint = true;
    // A fifteenth of the 3 s interval: retries after 200-300, 400-600 and 800-1200 ms.
    const { peer, refreshes } = await start({ connections: 1, timing: { ...fast, failoverCheckMs: 3_000 } });
    await waitUntil(async () => peer.peer.relayUrl === live.url, 10_000, "the fourth check to move it");
    const at = api.calls
      .filter((c) => c.path === `/v1/peer/agents/${peer.deviceId}/refresh`)
      .map((c) => c.at);
    expect(refreshes()).toBe(4);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(190);
    expect(gaps[1]).toBeGreaterThan(gaps[0]!);
    expect(gaps[2]).toBeGreaterThan(gaps[1]!);
    expect(gaps[2]).toBeGreaterThanOrEqual(790);
    // Doubling, not a fixed wait: the third gap is well over twice the first.
    expect(gaps[2]).toBeGreaterThan(2.5 * gaps[0]!);
  });

  it("an API that does not answer `relay` leaves the device where it is", async () => {
    api.refreshRelay = null;
    const { peer, refreshes } = await start({ connections: 1 });
    await waitUntil(async () => refreshes() >= 1, 5_000, "a relay check");
    await new Promise((r) => setTimeout(r, 200));
    expect(peer.peer.relayUrl).toBe(deadUrl);
  });

  it("a relay pinned by configuration is never left and costs no refresh", async () => {
    api.refreshRelay = live.url;
    const { peer, refreshes } = await start({ connections: 2, relayUrl: deadUrl });
    await new Promise((r) => setTimeout(r, 800));
    expect(refreshes()).toBe(0);
    expect(peer.peer.relayUrl).toBe(deadUrl);
  });

  it("sockets that reach `connected` and then drop are not failures: no relay check", async () => {
    const flaky = await startStandinRelay();
    flaky.onConn((c) => c.ws.on("message", () => setTimeout(() => c.ws.terminate(), 20)));
    try {
      api.relay = flaky.url;
      api.refreshRelay = live.url;
      const { peer, lines, refreshes } = await start({ connections: 2 });
      await waitUntil(
        async () => lines.filter((l) => l.startsWith("[ACK]")).length >= 6,
        5_000,
        "three rounds of connect, ack, drop",
      );
      expect(refreshes()).toBe(0);
      expect(peer.peer.relayUrl).toBe(flaky.url);
    } finally {
      await flaky.close();
    }
  });
});
