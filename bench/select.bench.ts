// Selection cost at 200,000 listed endpoints: the real script (sorted-set indexes) against a linear
// scan, both measured in the same run on the same data. Starts its own throwaway redis-server.
//   node bench/select.bench.ts [endpoints=200000]
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRedis } from "../dev/services.ts";
import { keys } from "../shared/keys.ts";
import { listEndpoint, releaseHold, selectEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";

const total = Number(process.argv[2] ?? 200_000);
const dir = mkdtempSync(join(tmpdir(), "select-bench-"));
const server = await startRedis(dir);
const redis = tcpRedis(server.url);
try {
  const countries = ["us", "de", "gb", "fr", "br", "in", "jp", "ng", "mx", "id"];
  const tiers = ["fast", "medium", "slow", "unknown"] as const;
  const t0 = performance.now();
  for (let i = 0; i < total; i += 5000) {
    await Promise.all(
      Array.from({ length: Math.min(5000, total - i) }, (_, j) => {
        const n = i + j;
        const modem = n % 7 === 0;
        return listEndpoint(redis, {
          endpointId: `agent_${n.toString(16).padStart(16, "0")}`,
          pool: modem ? "mbl" : "peer",
          kind: modem ? "modem" : "peer",
          country: countries[n % countries.length] as string,
          ipType: modem ? "mobile" : "residential",
          speedTier: tiers[n % tiers.length] as (typeof tiers)[number],
          relayInternal: "http://127.0.0.1:1",
          deviceId: `agent_${n}`,
        });
      }),
    );
  }
  console.log(`listed ${total} endpoints in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const scanSource = readFileSync(join(import.meta.dirname, "select_scan.lua"), "utf8");
  const scanSha = await redis.scriptLoad(scanSource);
  const cases: [string, "any" | "peer" | "mbl", string][] = [
    ["peer/us", "peer", "us"],
    ["any/any", "any", "any"],
  ];
  for (const [label, pool, country] of cases) {
    const runs = 2000;
    let t = performance.now();
    for (let i = 0; i < runs; i++) {
      const r = await selectEndpoint(redis, {
        keyId: `pk_${i % 50}`,
        pool,
        country,
        maxConnections: 0,
        now: Date.now(),
        leaseMs: 30_000,
      });
      if (!r.ok) throw new Error(r.code);
      await releaseHold(redis, r.hold, Date.now());
    }
    // select + release, both round trips, so this overstates the script's cost
    const indexed = (performance.now() - t) / runs;
    const scans = 10;
    t = performance.now();
    for (let i = 0; i < scans; i++) await redis.evalsha(scanSha, [keys.poolListed()], [pool, country]);
    const scan = (performance.now() - t) / scans;
    console.log(
      `${label}: indexed select+release ${(indexed * 1000).toFixed(0)} us/op, linear scan ${scan.toFixed(1)} ms/op, ratio ${(scan / indexed).toFixed(0)}x`,
    );
  }
} finally {
  await redis.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
