// Figure 5, faults, each printing its rows: (a) SIGKILL one relay of two while it holds a fleet, a
// supervisor restarting it; (b) SIGKILL one gateway of two under customer load; (c) restart Redis
// (on the same port, with its data) under customer traffic; (d) SIGKILL a relay and leave it down:
// its devices fail over to the other region (the SDK's relay check through the API's refresh).
// Loopback only; every loop is bounded.
import { existsSync, readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { keys } from "../shared/keys.ts";
import { getBytes, openStream, type Route, type Target } from "./measure.ts";
import type { BenchNetwork } from "./network.ts";
import type { Row } from "./report.ts";
import { type HashTarget, hashTunnel, scrapeMetric, startHashTarget } from "./soak.ts";

export interface FaultSettings {
  /** (a) how long the supervisor waits before starting the killed relay again; < 0: not in the window */
  relayRestartMs: number;
  /** (a) how long to wait for every device to be back and routable */
  recoveryTimeoutMs: number;
  /** (d) how long the killed relay stays down while its devices move to the other region */
  relayDownMs: number;
  /** (b, c) customers in flight at once */
  loadConcurrency: number;
  /** (b) tunnels the killed gateway holds when it dies */
  heldTunnels: number;
  /** (b) how long to wait for the dead gateway's holds to lapse and be swept (0: read their expiry only) */
  lapseWaitMs: number;
  /** (c) how long Redis stays down */
  redisDownMs: number;
  /** (c) how long to wait for the relays' next write to Redis (0: not waited) */
  relayWriteWaitMs: number;
  /** (b, c) customer traffic before the fault and after the recovery */
  aroundMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const secs = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : "n/a");

/**
 * Register and refresh calls the API served, counted from its per-address rate-limit window
 * counters (functions/src/routes/peer/common.ts counts every call before serving it). Each call of
 * the returned reader adds every counter's growth since the previous reading; a counter that
 * dropped started a new window, so all of it is new. Per counter, not on their sum: one window
 * rolling over must not count the other counters again.
 */
function apiIdentityCalls(net: BenchNetwork): () => Promise<number> {
  const last = new Map<string, number>();
  let total = 0;
  return async () => {
    const now = new Map<string, number>();
    for (const scope of ["register", "refresh"])
      for (const k of await net.redis.raw.keys(`rl:${scope}:*`))
        now.set(k, Number((await net.redis.get(k)) ?? 0));
    for (const [k, v] of now) {
      const before = last.get(k) ?? 0;
      total += v >= before ? v - before : v;
    }
    last.clear();
    for (const [k, v] of now) last.set(k, v);
    return total;
  };
}

function pinned(net: BenchNetwork, gateway: number, deviceId: string): Route {
  return {
    kind: "http-connect",
    port: net.gateways[gateway % net.gateways.length]!.httpPort,
    auth: `${net.customer.user}-pin-device-${deviceId}:${net.customer.secret}`,
  };
}

/** One CONNECT + 64-byte GET; resolves with the error message, or undefined when it worked. */
async function request(route: Route, target: Target): Promise<string | undefined> {
  try {
    const sock = await openStream(route, target, 10_000);
    await getBytes(sock, target, 64);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

// --- (a) relay killed ------------------------------------------------------------------------------

/**
 * Kills the second relay (region local-eu) holding `fleet` (devices x sockets each), restarts it
 * after `relayRestartMs`, and follows the fleet back: sockets per relay, API identity calls, and a
 * CONNECT pinned to each device (through the gateways in turn) once its presence is fresh.
 */
export async function relayKillFigure(
  net: BenchNetwork,
  fleet: { ids: string[]; socketsPerDevice: number },
  s: FaultSettings,
  log: (m: string) => void,
  fault = "a",
  /** filled in for callers that add rows of their own */
  stats: { apiCalls: number; killAt?: number } = { apiCalls: 0 },
): Promise<Row[]> {
  const victim = net.relays[1]!;
  const other = net.relays[0]!;
  const expected = fleet.ids.length * fleet.socketsPerDevice;
  const otherBefore = await scrapeMetric(other.metrics, "relay_sockets");
  const victimBefore = await scrapeMetric(victim.metrics, "relay_sockets");
  const target: Target = { host: "127.0.0.1", port: net.httpTarget.port };

  const samples: { ms: number; victim: number; other: number; api: number }[] = [];
  const readApiCalls = apiIdentityCalls(net);
  let apiPrev = await readApiCalls();
  log(
    `fault ${fault}: API register/refresh calls in the current rate-limit windows before the kill: ${apiPrev}`,
  );
  let apiCalls = 0;
  let sampling = true;
  const killAt = Date.now();
  const { restart } = await net.killEdge(victim);
  log(
    `fault ${fault}: killed ${victim.id} (${victimBefore} sockets) in ${Date.now() - killAt} ms (at ${killAt})`,
  );
  // A negative delay: no supervisor, the relay stays down for the whole window (started again after
  // it, for the faults that follow): shows whether its devices move to the other region by themselves.
  let restartedMs = Number.NaN;
  const restarted =
    s.relayRestartMs < 0
      ? Promise.resolve()
      : sleep(s.relayRestartMs)
          .then(() => restart())
          .then(() => {
            restartedMs = Date.now() - killAt;
          });
  const sampler = (async () => {
    while (sampling) {
      const [v, o, api] = await Promise.all([
        scrapeMetric(victim.metrics, "relay_sockets"),
        scrapeMetric(other.metrics, "relay_sockets"),
        readApiCalls(),
      ]);
      const delta = api - apiPrev;
      apiPrev = api;
      apiCalls += delta;
      samples.push({ ms: Date.now() - killAt, victim: v || 0, other: o, api: delta });
      await sleep(250);
    }
  })();

  // Routable: a pinned CONNECT works. Tried for a device once the relay wrote its presence anew
  // (connectedAt after the kill), so the sweep itself sends no customer to a device still away.
  const routableMs = new Map<string, number>();
  const deadline = killAt + s.recoveryTimeoutMs;
  let lastError = "";
  while (routableMs.size < fleet.ids.length && Date.now() < deadline) {
    const pending = fleet.ids.filter((id) => !routableMs.has(id));
    const pipe = net.redis.raw.pipeline();
    for (const id of pending) pipe.hget(keys.presence(id), "connectedAt");
    const at = ((await pipe.exec()) ?? []).map((r) => Number(r[1] ?? 0));
    const fresh = pending.filter((_, i) => at[i]! >= killAt);
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(16, fresh.length) }, async () => {
        while (next < fresh.length) {
          const i = next++;
          const id = fresh[i]!;
          const err = await request(pinned(net, i, id), target);
          if (err === undefined) routableMs.set(id, Date.now() - killAt);
          else lastError = err;
        }
      }),
    );
    if (routableMs.size < fleet.ids.length) await sleep(250);
  }
  await restarted;
  // Sample until every socket is back (a device is routable with one of its sockets).
  while (Date.now() < deadline) {
    const x = samples.at(-1);
    if (x && x.victim + x.other - otherBefore >= expected) break;
    await sleep(250);
  }
  sampling = false;
  await sampler;
  stats.apiCalls = apiCalls;
  stats.killAt = killAt;
  // The curve second by second and what the restarted relay refused: where a slow recovery went.
  const perSecond: string[] = [];
  for (let t = 1; t <= Math.ceil((samples.at(-1)?.ms ?? 0) / 1000); t++) {
    const x = samples.filter((y) => y.ms <= t * 1000).at(-1);
    if (x) perSecond.push(`${t}s:${x.victim}`);
  }
  log(`fault ${fault}: sockets on ${victim.id} by second after the kill: ${perSecond.join(" ")}`);
  const refusals = await fetch(victim.metrics)
    .then((r) => r.text())
    .then((t) => t.match(/^relay_sockets_refused_total\{.*$/gm)?.join(", ") ?? "none")
    .catch(() => "metrics unreadable");
  log(`fault ${fault}: ${victim.id} refusals since its restart: ${refusals}`);
  if (s.relayRestartMs < 0) await restart();

  const backAt = samples.find((x) => x.victim + x.other - otherBefore >= expected)?.ms ?? Number.NaN;
  const last = samples.at(-1)!;
  // The reconnect curve: when the restarted relay held 1 %, 50 % and all of its sockets again.
  const reached = (share: number) =>
    samples.find((x) => x.victim >= Math.max(1, share * victimBefore))?.ms ?? Number.NaN;
  let peak = 0;
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i]!.ms - samples[i - 1]!.ms) / 1000;
    if (dt > 0) peak = Math.max(peak, (samples[i]!.victim - samples[i - 1]!.victim) / dt);
  }
  const recoveryS = Math.max(1, (Number.isFinite(backAt) ? backAt : last.ms) - restartedMs) / 1000;
  const maxApiRate = Math.max(0, ...samples.map((x) => x.api)) * 4; // 250 ms samples -> per second
  const routable = [...routableMs.values()];
  const allRoutable = routable.length === fleet.ids.length ? Math.max(...routable) : Number.NaN;
  log(
    `fault ${fault}: restarted after ${secs(restartedMs)}; sockets back ${secs(backAt)}; routable ${routable.length}/${fleet.ids.length}, last ${secs(allRoutable)}${lastError ? ` (last error: ${lastError})` : ""}; API identity calls ${apiCalls}`,
  );
  const n = fleet.ids.length.toLocaleString("en");
  return [
    {
      figure: `fault ${fault}: SIGKILL relay ${victim.region} holding ${victimBefore.toLocaleString("en")} sockets (${n} devices), ${s.relayRestartMs < 0 ? "not restarted" : `supervisor restart after ${secs(s.relayRestartMs)}`}: all sockets back / all devices routable (pinned CONNECT)`,
      value: `${secs(backAt)} / ${Number.isFinite(allRoutable) ? secs(allRoutable) : `${routable.length} of ${n} after ${secs(s.recoveryTimeoutMs)}`}`,
      anchor: "-",
      ratio: "-",
      goal: "<= 15 s",
    },
    {
      figure: `fault ${fault}: where the sockets reconnected`,
      value: `${last.victim.toLocaleString("en")} back on the restarted ${victim.region}, ${(last.other - otherBefore).toLocaleString("en")} moved to ${other.region}`,
      anchor: "-",
      ratio: "-",
      goal: "other region or back",
    },
    {
      figure: `fault ${fault}: reconnect curve after the kill: 1 % / 50 % / 100 % of sockets back; peak rate`,
      value: `${secs(reached(0.01))} / ${secs(reached(0.5))} / ${secs(reached(1))}; ${Math.round(peak).toLocaleString("en")} sockets/s (${Math.round(victimBefore / recoveryS).toLocaleString("en")}/s averaged from the restart)`,
      anchor: "-",
      ratio: "-",
      goal: "jittered, no storm",
    },
    {
      figure: `fault ${fault}: API register + refresh calls during the recovery`,
      value: `${apiCalls} in ${secs(last.ms)} (at most ${maxApiRate}/s)`,
      anchor: "-",
      ratio: "-",
      goal: "no storm (stated)",
    },
  ];
}

// --- (d) relay left down ----------------------------------------------------------------------------

/**
 * Kills the second relay and leaves it down for `relayDownMs` (started again afterwards): fault a's
 * rows without a supervisor, plus how many devices the other region's relay holds at the end, when
 * the last one got there, and the API refresh calls per device that moved them (the no-storm bound:
 * one relay check per device per 30 s).
 */
export async function relayLeftDownFigure(
  net: BenchNetwork,
  /** eventFiles: the fleet's FLEET_EVENTS_FILEs, listed once fault d is over (a file appears with its first event) */
  fleet: { ids: string[]; socketsPerDevice: number; eventFiles: () => string[] },
  s: FaultSettings,
  log: (m: string) => void,
): Promise<Row[]> {
  const other = net.relays[0]!;
  const stats: { apiCalls: number; killAt?: number } = { apiCalls: 0 };
  const startedAt = Date.now();
  const killRows = await relayKillFigure(
    net,
    fleet,
    { ...s, relayRestartMs: -1, recoveryTimeoutMs: s.relayDownMs },
    log,
    "d",
    stats,
  );
  // Fault a's rows, less the reconnect curve of a restart that did not happen.
  const rows = killRows
    .filter((r) => !r.figure.includes("reconnect curve"))
    .map((r) => ({
      ...r,
      value: r.value.replace("back on the restarted", "back on the killed"),
      goal: r.goal === "<= 15 s" ? "<= 60 s" : r.goal,
    }));
  const pipe = net.redis.raw.pipeline();
  for (const id of fleet.ids) pipe.hmget(keys.presence(id), "relayId", "connectedAt");
  const onOther = ((await pipe.exec()) ?? [])
    .map((r) => r[1] as [string | null, string | null])
    .filter(([relayId]) => relayId === other.id)
    .map(([, at]) => Number(at ?? 0) - startedAt);
  // Every device's calls, the other fleets' too (in a --faults-only run a few idle devices).
  const apiCalls = stats.apiCalls;
  const n = fleet.ids.length;
  log(`fault d: ${onOther.length}/${n} devices on ${other.id}; API identity calls ${apiCalls}`);
  rows.push({
    figure: `fault d: devices that moved to ${other.region} (the relay left down up to ${secs(s.relayDownMs)}); the last one connected there after; API register + refresh calls per device`,
    value: `${onOther.length} of ${n}; ${secs(Math.max(0, ...onOther))}; ${(apiCalls / Math.max(1, n)).toFixed(2)} per device`,
    anchor: "-",
    ratio: "-",
    goal: "all; <= 60 s; <= 2",
  });
  rows.push(failoverStepsRow(fleet.eventFiles(), stats.killAt ?? startedAt));
  return rows;
}

/**
 * What fault d's time is made of, from the SDK's own log lines (bench/fleet, FLEET_EVENTS_FILE):
 * when devices moved, how many checks still named the dead relay (its alive entry had not run out)
 * and how many the API could not answer (each one waits for its Retry-After).
 */
function failoverStepsRow(files: string[], since: number): Row {
  const events = files
    .flatMap((f) => (existsSync(f) ? readFileSync(f, "utf8").split("\n").filter(Boolean) : []))
    .map((l) => JSON.parse(l) as { at: number; kind: string })
    .filter((e) => e.at >= since);
  const count = (kind: string) => events.filter((e) => e.kind === kind).length;
  const moved = events
    .filter((e) => e.kind === "FAILOVER")
    .map((e) => e.at - since)
    .sort((a, b) => a - b);
  const p = (q: number) =>
    moved.length ? secs(moved[Math.min(moved.length - 1, Math.floor(q * moved.length))]!) : "-";
  return {
    figure:
      "fault d: the devices' failover steps after the kill: moved p10 / p50 / last; checks that still named the killed relay; checks the API could not answer",
    value: `${p(0.1)} / ${p(0.5)} / ${p(1)} (${moved.length} moves); ${count("FAILOVER_CHECK")}; ${count("FAILOVER_CHECK_FAILED")}`,
    anchor: "-",
    ratio: "-",
    goal: "reported",
  };
}

// --- (b) gateway killed ------------------------------------------------------------------------------

/** Customers back to back on `route` until `stop()`: requests and failures counted. */
function customerLoad(route: Route, target: Target, concurrency: number) {
  const out = { ok: 0, failed: 0, firstError: "" };
  let running = true;
  const done = Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (running) {
        const err = await request(route, target);
        if (err === undefined) out.ok++;
        else {
          out.failed++;
          out.firstError ||= err;
        }
      }
    }),
  );
  return {
    out,
    async stop() {
      running = false;
      await done;
      return out;
    },
  };
}

/**
 * Kills the second gateway while it holds `heldTunnels` tunnels of its own key and the first serves
 * a steady customer load; reads when the dead gateway's endpoint holds and byte leases lapse (their
 * expiry in Redis) and, within `lapseWaitMs`, when they are swept. Restarts the gateway afterwards.
 */
export async function gatewayKillFigure(
  net: BenchNetwork,
  s: FaultSettings,
  log: (m: string) => void,
): Promise<Row[]> {
  const survivor = net.gateways[0]!;
  const victim = net.gateways[1]!;
  const target: Target = { host: "127.0.0.1", port: net.httpTarget.port };
  const key = await net.mintPoolKey("fault-gateway");
  const victimRoute: Route = {
    kind: "http-connect",
    port: victim.httpPort,
    auth: `${key.user}:${key.secret}`,
  };
  const held = (
    await Promise.all(
      Array.from({ length: s.heldTunnels }, () => openStream(victimRoute, target).catch(() => undefined)),
    )
  ).filter((x): x is Socket => x !== undefined);
  for (const sock of held) sock.on("error", () => {});

  const survivorRoute: Route = {
    kind: "http-connect",
    port: survivor.httpPort,
    auth: `${net.customer.user}:${net.customer.secret}`,
  };
  const load = customerLoad(survivorRoute, target, s.loadConcurrency);
  await sleep(s.aroundMs);
  const killAt = Date.now();
  const { restart } = await net.killEdge(victim);

  // What the dead gateway left in Redis: its holds (members "holdId|endpointId|keyId", scored by
  // expiry) and its tunnels' byte leases (credlease:{key} tunnelId "gatewayId:requestId" ->
  // "amount:expiry:seq", ":c" once closed).
  const holdsOf = async () => {
    const flat = await net.redis.raw.zrange(keys.poolHolds(), 0, -1, "WITHSCORES");
    const out: number[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2)
      if (flat[i]!.endsWith(`|${key.keyId}`)) out.push(Number(flat[i + 1]));
    return out;
  };
  const holds = await holdsOf();
  const leases = Object.entries(await net.redis.hgetall(keys.credentialLeases(key.keyId)))
    .filter(([tunnel, v]) => tunnel.startsWith(`${victim.id}:`) && !v.endsWith(":c"))
    .map(([, v]) => Number(v.split(":")[1]));
  const holdsLapse = holds.length ? Math.max(...holds) - killAt : Number.NaN;
  const leasesLapse = leases.length ? Math.max(...leases) - killAt : Number.NaN;

  // Swept: gone from pool:holds (any gateway's next selection releases expired holds).
  let sweptMs = Number.NaN;
  const waitUntil = killAt + Math.min(s.lapseWaitMs, Math.max(0, holdsLapse) + 5_000);
  while (Date.now() < waitUntil) {
    if ((await holdsOf()).length === 0) {
      sweptMs = Date.now() - killAt;
      break;
    }
    await sleep(250);
  }
  const r = await load.stop();
  for (const sock of held) sock.destroy();
  log(
    `fault b: killed ${victim.id} holding ${holds.length} holds, ${leases.length} byte leases; ${survivor.id} served ${r.ok} requests, ${r.failed} failed${r.firstError ? ` (${r.firstError})` : ""}; holds lapse ${secs(holdsLapse)}, leases ${secs(leasesLapse)}, swept ${secs(sweptMs)}`,
  );
  await restart();
  return [
    {
      figure: `fault b: SIGKILL one gateway of two: failed customer requests on the other (${s.loadConcurrency} concurrent, ${secs(Date.now() - killAt)} around the kill)`,
      value: `${r.failed} of ${(r.ok + r.failed).toLocaleString("en")}`,
      anchor: "-",
      ratio: "-",
      goal: "0",
    },
    {
      figure: `fault b: the dead gateway's ${holds.length} endpoint holds / ${leases.length} byte leases lapse after (their expiry in Redis); holds swept from pool:holds after`,
      value: `${secs(holdsLapse)} / ${secs(leasesLapse)}; ${Number.isFinite(sweptMs) ? secs(sweptMs) : s.lapseWaitMs ? "not within the wait" : "not waited (smoke)"}`,
      anchor: "-",
      ratio: "-",
      goal: "within a lease (30 s / 10 s)",
    },
  ];
}

// --- (c) Redis restarted -----------------------------------------------------------------------------

/**
 * Hash tunnels of their own key on every gateway, back to back, while Redis stops (SHUTDOWN SAVE),
 * stays down `redisDownMs` and comes back on the same port. Recovery: the first tunnel per gateway
 * that opens after Redis is back. Billing: the key's metered bytes against the bytes moved.
 */
export async function redisRestartFigure(
  net: BenchNetwork,
  s: FaultSettings,
  log: (m: string) => void,
): Promise<Row[]> {
  const target: HashTarget = await startHashTarget();
  const key = await net.mintPoolKey("fault-redis");
  // Final usage reports a gateway gave up on: its error lines since this figure began, by their
  // time (a busy gateway's kept output is trimmed from the front, so counts could not be compared).
  const since = new Date().toISOString();
  const lostReports = () =>
    net.gateways.reduce((n, g) => {
      const lines = g.service.output().matchAll(/"time":"([^"]+)"[^\n]*final usage report failed/g);
      return n + [...lines].filter((m) => m[1]! >= since).length;
    }, 0);
  const routes: Route[] = net.gateways.map((g) => ({
    kind: "http-connect",
    port: g.httpPort,
    auth: `${key.user}:${key.secret}`,
  }));
  const tunnels: { gateway: number; startedAt: number; ok: boolean; down: number }[] = [];
  let failures = 0;
  let firstError = "";
  let running = true;
  let i = 0;
  const workers = Promise.all(
    Array.from({ length: s.loadConcurrency }, async () => {
      while (running) {
        const gateway = i++ % routes.length;
        const startedAt = Date.now();
        const size = () => Math.floor(Math.random() * 16_385);
        const r = await hashTunnel(routes[gateway]!, target, size(), size(), 15_000);
        tunnels.push({
          gateway,
          startedAt,
          ok: r.kind === "ok",
          down: r.kind === "setup_failed" ? 0 : r.down,
        });
        if (r.kind !== "ok") {
          failures++;
          firstError ||= r.kind === "setup_failed" ? r.error : r.kind;
          await sleep(100); // a refused customer retries, but not in a hot loop
        }
      }
    }),
  );
  await sleep(s.aroundMs);
  const { stoppedAt, startedAt } = await net.restartRedis(s.redisDownMs);
  log(`fault c: Redis down ${secs(startedAt - stoppedAt)}`);
  // Recovered: a tunnel that started after Redis was back worked, on each gateway.
  const recoveredAt = (g: number) =>
    tunnels.find((t) => t.gateway === g && t.ok && t.startedAt >= startedAt)?.startedAt;
  const deadline = Date.now() + 30_000;
  while (net.gateways.some((_, g) => recoveredAt(g) === undefined) && Date.now() < deadline) await sleep(100);
  // Keep the traffic up a little longer: the recovery must hold, not flicker.
  await sleep(s.aroundMs);
  running = false;
  await workers;
  const after = Math.max(...net.gateways.map((_, g) => recoveredAt(g) ?? Number.NaN));
  const failedAfter = tunnels.filter((t) => !t.ok && t.startedAt > after).length;

  // Relays: their next write to Redis after the restart (relay:{id} is refreshed every 10 s).
  const relayBack: string[] = [];
  if (s.relayWriteWaitMs > 0)
    for (const r of net.relays) {
      let at = Number.NaN;
      const until = startedAt + s.relayWriteWaitMs;
      while (Date.now() < until) {
        const updatedAt = Number((await net.redis.hgetall(keys.relayInfo(r.id))).updatedAt ?? 0);
        if (updatedAt >= startedAt) {
          at = updatedAt - startedAt;
          break;
        }
        await sleep(250);
      }
      relayBack.push(`${r.id} ${secs(at)}`);
    }

  // Billing: every tunnel has closed (and made its final report) once the gateways hold none.
  for (let k = 0; k < 100; k++) {
    const active = await Promise.all(
      net.gateways.map((g) => scrapeMetric(g.metrics, "gateway_tunnels_active")),
    );
    if (active.every((n) => n === 0)) break;
    await sleep(200);
  }
  const metered = Number((await net.redis.get(keys.credentialUsed(key.keyId))) ?? 0);
  const lost = lostReports();
  // Moved: what arrived at the far end each way (the target's count up, the clients' count down).
  const moved = target.received + tunnels.reduce((sum, t) => sum + t.down, 0);
  await target.stop();
  const perGateway = net.gateways.map(
    (g, k) => `${g.id} ${secs((recoveredAt(k) ?? Number.NaN) - startedAt)}`,
  );
  log(
    `fault c: ${tunnels.length} tunnels, ${failures} failed${firstError ? ` (${firstError})` : ""}; recovered ${perGateway.join(", ")} after Redis was back; metered ${metered} B, moved ${moved} B; ${lost} final usage reports given up`,
  );
  return [
    {
      figure: `fault c: Redis restarted mid-traffic (down ${secs(startedAt - stoppedAt)}, data kept; ${s.loadConcurrency} customers): first working tunnel per gateway after Redis was back; failed tunnels`,
      value: `${perGateway.join(", ")}; ${failures - failedAfter} failed around the outage, ${failedAfter} after the recovery`,
      anchor: "-",
      ratio: "-",
      goal: "recover without a restart",
    },
    {
      figure: `fault c: billing across the restart (${tunnels.length.toLocaleString("en")} tunnels of one key): metered vs moved`,
      value: `metered ${metered.toLocaleString("en")} B, moved ${moved.toLocaleString("en")} B: ${metered - moved >= 0 ? "+" : ""}${(metered - moved).toLocaleString("en")} B; ${lost} final usage reports given up`,
      anchor: "-",
      ratio: moved ? `${(metered / moved).toFixed(6)}x` : "n/a",
      goal: "not billed twice (= moved)",
    },
    ...(relayBack.length
      ? [
          {
            figure: "fault c: relays write to Redis again (next relay:{id} refresh after the restart)",
            value: relayBack.join(", "),
            anchor: "-",
            ratio: "-",
            goal: "within their 10 s refresh",
          },
        ]
      : []),
  ];
}
