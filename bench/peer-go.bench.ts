// Go peer vs TypeScript peer: download throughput through the same gateway -> relay -> peer path,
// and the idle memory of one peer holding 4 relay sockets. Printed, not asserted. Starts its own
// Redis/Postgres, API (wrangler dev), relay, gateway and prober on loopback; ~2-3 minutes.
//   npm exec -- node bench/peer-go.bench.ts [MiB per request=32] [requests=5]
// (npm exec puts node_modules/.bin first on PATH: wrangler needs the Node 22 there.)
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killAllNow, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { startStateServices } from "../dev/services.ts";
import { deriveDeviceId } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { goBinary } from "../test/helpers/go.ts";
import { startSupplyNetwork } from "../test/helpers/supply-network.ts";

const mib = Number(process.argv[2] ?? 32);
const requests = Number(process.argv[3] ?? 5);
const root = join(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "peer-go-bench-"));
process.on("exit", killAllNow);

const services = await startStateServices({ dir: join(dir, "state") });
const net = await startSupplyNetwork({ ...services.env, PEERPROXY_TEST_TMP: dir }, { country: "is" });
const goBin = await goBinary(dir);

type Kind = "go" | "ts";
function startPeer(kind: Kind, name: string): Service {
  const env = {
    API_KEY: net.supplier.apiKey,
    AGENT_NAME: name,
    RELAY_URL: net.relayUrl,
    PEER_STATE_FILE: join(dir, `${name}.json`),
    WS_CONNECTIONS: "4",
  };
  if (kind === "go")
    return startProcess(name, goBin, ["-allow-private"], { env: { ...env, API_BASE: net.api.url } });
  return startProcess(name, process.execPath, [join(root, "peer-node", "src", "cli.ts"), "-allow-private"], {
    env: { ...env, PEER_API_URL: net.api.url },
  });
}

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
const acks = (svc: Service) => (svc.output().match(/\[ACK\]/g) ?? []).length;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Result {
  kind: Kind;
  mibPerSec: number[];
  idleRssMiB: number;
  servedBytes: number;
}

async function measure(kind: Kind): Promise<Result> {
  const name = `bench-${kind}-${process.pid}`;
  const deviceId = await deriveDeviceId(net.supplier.apiKey, name);
  const peer = startPeer(kind, name);
  try {
    await waitUntil(async () => acks(peer) === 4, 30_000, `${kind} peer: 4 acks`);
    // Idle: connected, heartbeating, no tunnels yet.
    await new Promise((r) => setTimeout(r, 5_000));
    const idleRssMiB = rssKiB(peer.child.pid!) / 1024;
    await net.waitListed(deviceId, 90_000);
    const bytesBefore = await net.redis.hgetall(keys.deviceBytes(deviceId));
    const url = `${net.target.url}/bytes/${mib * 1024 * 1024}`;
    await net.proxiedGet(`${net.target.url}/bytes/1048576`); // warm-up
    const mibPerSec: number[] = [];
    for (let i = 0; i < requests; i++) {
      const t0 = performance.now();
      const got = await net.proxiedGet(url);
      const s = (performance.now() - t0) / 1000;
      if (got.status !== 200 || got.bytes !== mib * 1024 * 1024)
        throw new Error(`${kind}: status ${got.status}, ${got.bytes} bytes: ${got.text}`);
      mibPerSec.push(mib / s);
    }
    // The relay flushes its per-device counters every few seconds.
    await new Promise((r) => setTimeout(r, 6_000));
    const after = await net.redis.hgetall(keys.deviceBytes(deviceId));
    const sum = (h: Record<string, string>) => Number(h.up ?? 0) + Number(h.down ?? 0);
    return { kind, mibPerSec, idleRssMiB, servedBytes: sum(after) - sum(bytesBefore) };
  } finally {
    await peer.stop("SIGTERM");
    // The next peer must be the only one online in the pool.
    await waitUntil(
      async () => !(await net.redis.hgetall(keys.presence(deviceId))).relayId,
      30_000,
      `${kind} peer offline`,
    );
  }
}

try {
  const results = [await measure("ts"), await measure("go")];
  console.log(`\nGET ${mib} MiB x ${requests} through gateway -> relay -> peer (loopback, same machine)`);
  for (const r of results)
    console.log(
      `  ${r.kind === "go" ? "Go peer" : "TS peer"}: median ${median(r.mibPerSec).toFixed(1)} MiB/s ` +
        `(runs ${r.mibPerSec.map((x) => x.toFixed(1)).join(", ")}), served ${(r.servedBytes / 1024 ** 2).toFixed(0)} MiB, ` +
        `idle RSS with 4 sockets ${r.idleRssMiB.toFixed(1)} MiB`,
    );
  const [ts, go] = results as [Result, Result];
  console.log(
    `  ratio Go/TS: throughput ${(median(go.mibPerSec) / median(ts.mibPerSec)).toFixed(2)}x, idle RSS ${(go.idleRssMiB / ts.idleRssMiB).toFixed(2)}x`,
  );
} finally {
  await net.stop();
  await services.stop();
  rmSync(dir, { recursive: true, force: true });
}
