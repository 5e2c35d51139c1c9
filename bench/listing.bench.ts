// The listing cron (reconcileListings) over N online, verified devices, through the Upstash REST
// client the Worker uses (here against dev/upstash-rest.ts, so one request is a loopback HTTP round
// trip; production adds the network's). Starts its own Redis, stand-in and Postgres.
//   node bench/listing.bench.ts [devices=2000] [runs=5]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStateServices } from "../dev/services.ts";
import { reconcileListings } from "../functions/src/services/listing.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { upstashRedis } from "../shared/redis.ts";

const devices = Number(process.argv[2] ?? 2000);
const runs = Number(process.argv[3] ?? 5);
const dir = mkdtempSync(join(tmpdir(), "listing-bench-"));
const services = await startStateServices({ dir });
const { env } = services;
const seeder = tcpRedis(env.REDIS_URL);
const redis = upstashRedis(env.UPSTASH_REDIS_REST_URL, env.UPSTASH_REDIS_REST_TOKEN);
const db = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);

const median = (ms: number[]) => ms.sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;

try {
  const ids = Array.from({ length: devices }, (_, i) => `agent_${i.toString(16).padStart(16, "0")}`);
  const seed = (now: number) => {
    const p = seeder.raw.pipeline();
    for (const id of ids) {
      p.hset(keys.presence(id), {
        relayId: "relay-bench",
        relayInternal: "http://127.0.0.1:1",
        sockets: "4",
        ipType: "residential",
        country: "US",
      });
      p.hset(keys.probe(id), { verified: "1", speedTier: "fast", paused: "0" });
      p.zadd(keys.onlineDevices(), now, id);
    }
    return p.exec();
  };
  const pause = (paused: "0" | "1") => {
    const p = seeder.raw.pipeline();
    for (const id of ids) p.hset(keys.probe(id), { paused });
    return p.exec();
  };
  const reconcile = async (expect: (run: Awaited<ReturnType<typeof reconcileListings>>) => boolean) => {
    const t = performance.now();
    const run = await reconcileListings({ redis, db }, Date.now(), "slow");
    const took = performance.now() - t;
    if (!expect(run))
      throw new Error(`unexpected run: ${JSON.stringify({ ...run, flips: run.flips.length })}`);
    return took;
  };
  // Redis serves nothing else while a script runs: the longest single call is what every gateway's
  // selection may wait behind. SLOWLOG records each call over 1 ms with its duration.
  await seeder.raw.config("SET", "slowlog-log-slower-than", "1000");
  await seeder.raw.config("SET", "slowlog-max-len", "100000");
  await seeder.raw.slowlog("RESET");
  const times = { listing: [] as number[], steady: [] as number[], pulling: [] as number[] };
  for (let i = 0; i < runs; i++) {
    await seed(Date.now());
    await pause("0");
    times.listing.push(await reconcile((r) => r.listed === devices));
    // The state of most minutes: each listed device listed again (its relay or tier may have moved).
    times.steady.push(await reconcile((r) => r.considered === devices && r.flips.length === 0));
    await pause("1");
    times.pulling.push(await reconcile((r) => r.delisted === devices));
  }
  const figure = (ms: number[]) => `${median(ms).toFixed(0)} ms`;
  const slow = (await seeder.raw.slowlog("GET", "100000")) as [number, number, number, string[]][];
  const scripts = slow.filter((e) => /^eval/i.test(String(e[3]?.[0])));
  const longest = Math.max(0, ...scripts.map((e) => e[2])) / 1000;
  console.log(
    `reconcile over ${devices} devices, median of ${runs}: every one listed ${figure(times.listing)}, ` +
      `listed again ${figure(times.steady)}, every one pulled ${figure(times.pulling)}; ` +
      `longest single script call ${longest.toFixed(1)} ms (${scripts.length} over 1 ms)`,
  );
} finally {
  await db.end();
  await seeder.close();
  await services.stop();
  rmSync(dir, { recursive: true, force: true });
}
