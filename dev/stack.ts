// `npm start`: the whole network on one machine. Starts Redis, Postgres and the dev stand-ins, a
// local EVM chain (anvil, chain 8453, dev USDC at the canonical address), the API in workerd
// (wrangler dev, cron driven every minute), local targets, the relays and gateways (one each, or
// STACK_RELAYS / STACK_GATEWAYS of them: dev/edges.ts), a tinyproxy
// "modem" (pool mbl), two demo peers and the prober; seeds demo, supplier, operator and house accounts; waits
// until the demo exits are verified and listed; writes .local/stack.json with a demo credential and
// copy-paste curl lines; prints one `ready` line. Ctrl-C stops everything.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { startProbeTarget } from "../prober/target.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { BASE_CHAIN_ID } from "../shared/x402/networks.ts";
import { startEvmChain } from "./chains/evm.ts";
import { LOCAL_REGIONS, relayRegionsSetting, startGateways, startRelays } from "./edges.ts";
import { startTinyproxy } from "./modem.ts";
import { canListen, killAllNow, type Service, startProcess, stopAll, waitUntil } from "./proc.ts";
import { startStateServices } from "./services.ts";
import { startHttpTarget } from "./targets.ts";

const root = join(import.meta.dirname, "..");
// STACK_DIR lets tests run a second stack beside a developer's own; default .local/ (gitignored).
const localDir = process.env.STACK_DIR ?? join(root, ".local");
const port = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const ports = {
  api: port("API_PORT", 8787),
  relay: port("RELAY_PORT", 8080),
  relayInternal: port("RELAY_INTERNAL_PORT", 8081),
  gatewayHttp: port("GATEWAY_HTTP_PORT", 7000),
  gatewaySocks: port("GATEWAY_SOCKS_PORT", 7001),
  gatewayAdmin: port("GATEWAY_ADMIN_PORT", 7002),
  proberAdmin: port("PROBER_ADMIN_PORT", 7003),
};
// Horizontal scale, demonstrated (docs/adr/0023): STACK_RELAYS relays, one region each (dev/edges.ts),
// and STACK_GATEWAYS gateways on the one Redis and Postgres. Relay n > 1 listens on RELAY_PORT +
// 2(n-1) (internal port one above); gateway n > 1 on GATEWAY_*_PORT + 10(n-1).
const count = (name: string, max: number) => {
  const n = Number(process.env[name] ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name} must be an integer 1..${max}`);
  return n;
};
const relayCount = count("STACK_RELAYS", LOCAL_REGIONS.length);
const gatewayCount = count("STACK_GATEWAYS", 4);
const relayPorts = Array.from({ length: relayCount }, (_, i) => ({
  ws: ports.relay + 2 * i,
  internal: i === 0 ? ports.relayInternal : ports.relay + 2 * i + 1,
}));
const gatewayPorts = Array.from({ length: gatewayCount }, (_, i) => ({
  http: ports.gatewayHttp + 10 * i,
  socks: ports.gatewaySocks + 10 * i,
  admin: ports.gatewayAdmin + 10 * i,
}));

/**
 * Fails in a moment, naming the variable to change, when a port the stack listens on is taken (a
 * stack already running, another program on 8080): otherwise that surfaces much later, or as a
 * hang when whatever holds the port accepts and never answers.
 */
async function checkPortsFree() {
  const planned: [string, number][] = [
    ["API_PORT", ports.api],
    ...relayPorts.flatMap((p, i): [string, number][] => [
      [i === 0 ? "RELAY_PORT" : `RELAY_PORT + ${2 * i}`, p.ws],
      [i === 0 ? "RELAY_INTERNAL_PORT" : `RELAY_PORT + ${2 * i + 1}`, p.internal],
    ]),
    ...gatewayPorts.flatMap((p, i): [string, number][] => {
      const plus = i === 0 ? "" : ` + ${10 * i}`;
      return [
        [`GATEWAY_HTTP_PORT${plus}`, p.http],
        [`GATEWAY_SOCKS_PORT${plus}`, p.socks],
        [`GATEWAY_ADMIN_PORT${plus}`, p.admin],
      ];
    }),
    ["PROBER_ADMIN_PORT", ports.proberAdmin],
  ];
  const taken: string[] = [];
  for (const [name, p] of planned) if (!(await canListen(p))) taken.push(`${p} (${name})`);
  if (taken.length)
    throw new Error(
      `EADDRINUSE: port ${taken.join(", ")} already in use on 127.0.0.1; stop what holds it (another npm start?) or set the variable to a free port`,
    );
}
const echo = process.env.STACK_VERBOSE === "1";
const log = (msg: string) => console.log(`[stack] ${msg}`);

let stopping = false;
const stopState: (() => Promise<void>)[] = [];
/** Stops everything this launcher started, at any moment of start-up, and exits within 9 s. */
async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  log("stopping...");
  // The backstop: whatever a stop below waits on (a client's QUIT to a Redis that is already
  // gone, a server draining a keep-alive socket), the launcher exits in time; the exit hook
  // SIGKILLs any child group still alive. This timer also holds the event loop open meanwhile.
  setTimeout(() => {
    log("stop timed out; killed what was left");
    process.exit(code);
  }, 9_000);
  await stopAll();
  for (const s of stopState.reverse()) {
    if (echo) log(`stopping ${s.name || "service"}`);
    await Promise.race([s().catch(() => {}), new Promise((r) => setTimeout(r, 2_000))]);
  }
  log("stopped");
  process.exit(code);
}
// A client whose server died of the same Ctrl-C (a Postgres connection mid-seed) may throw outside
// any await: judged like a failed main() below, after the signal had its moment to land.
process.on("uncaughtException", (err) => {
  setTimeout(() => {
    if (stopping) return;
    console.error(`[stack] failed: ${err.stack ?? err}`);
    void shutdown(1);
  }, 250);
});
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));
process.on("SIGHUP", () => void shutdown(0));
process.on("exit", killAllNow);

async function startApi(vars: Record<string, string>): Promise<Service> {
  const persist = join(localDir, "wrangler");
  const args = ["dev", "--local", "--ip", "127.0.0.1", "--port", String(ports.api), "--persist-to", persist];
  args.push("--show-interactive-dev-session=false", "--test-scheduled");
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  const api = startProcess("api", join(root, "node_modules/.bin/wrangler"), args, {
    cwd: root,
    echo,
    env: {
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      WRANGLER_LOG_PATH: persist,
      NO_COLOR: "1",
    },
  });
  // A verdict ends the wait at once: waitUntil would retry a throw until its deadline.
  const verdict = await waitUntil(
    async () => {
      if (api.child.exitCode !== null) return "exited";
      // wrangler dev stays up when its port is taken (after checkPortsFree, by a race).
      if (/Address already in use/i.test(api.output())) return "taken";
      const health = `http://127.0.0.1:${ports.api}/health`;
      const res = await fetch(health, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
      return res?.ok && "up";
    },
    90_000,
    `the API on :${ports.api}`,
  );
  if (verdict === "exited") throw new Error(`wrangler dev exited:\n${api.output().slice(-2000)}`);
  if (verdict === "taken")
    throw new Error(`EADDRINUSE: port ${ports.api} is in use; set API_PORT to a free port`);
  return api;
}

/** One JSON call to the local API with an X-API-Key; a refusal stops the launcher with its body. */
async function apiCall<T>(
  base: string,
  method: string,
  path: string,
  apiKey: string,
  body: unknown,
): Promise<T> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { "content-type": "application/json", "x-api-key": apiKey },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

/**
 * Awaits start-up steps that run side by side. Unlike Promise.all it waits for every one to settle
 * before throwing the first failure, so nothing is still starting while the launcher shuts down.
 */
async function together<T extends readonly unknown[]>(steps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(steps);
  for (const r of settled) if (r.status === "rejected") throw r.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

async function main() {
  await checkPortsFree();
  mkdirSync(localDir, { recursive: true });
  const t0 = Date.now();
  // Start-up runs in stages of independent steps side by side: the state services beside the chain,
  // the API (wrangler dev, the slowest step) beside the relays, gateways and targets, the demo
  // peers beside each other and the prober.
  const [state, chain] = await together([
    startStateServices({ dir: join(localDir, "state"), databaseUrl: process.env.DATABASE_URL }).then((s) => {
      stopState.push(s.stop);
      log(`redis ${s.env.REDIS_URL}, postgres ready, stand-ins up`);
      return s;
    }),
    // The API checks its x402 rails (RPC, token, recipient) at startup: the chain is up before it.
    startEvmChain({ echo }).then((c) => {
      stopState.push(c.stop);
      log(`chain ${c.rpcUrl} (id ${BASE_CHAIN_ID}, USDC ${c.usdc})`);
      return c;
    }),
  ]);
  const env = state.env;
  // The payout treasury (docs/adr/0014): its own dev key, with gas and 10,000 USDC to pay suppliers.
  const treasuryKey = generatePrivateKey();
  const treasury = privateKeyToAccount(treasuryKey).address;
  const fundTreasury = async () => {
    await chain.testClient.setBalance({ address: treasury, value: 10n ** 20n });
    await chain.mint(treasury, 10_000_000_000n);
  };

  // Seed: the demo customer (buys with a pool key: `resell`), a supplier whose `supply` key the demo
  // peers register with (another account, so their traffic earns: ADR 0010), an operator (registers
  // the modem, mints the watchdog's key) and the house account x402 purchases mint under; the relay
  // region is the local relay. Each seeded account may resell 100 GiB in all.
  const seed = async () => {
    const pool = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
    try {
      const demo = await createAccountWithKey(pool, { name: "demo", kind: "customer", id: "acct_demo" });
      const supplier = await createAccountWithKey(pool, {
        name: "demo supplier",
        kind: "supplier",
        id: "acct_demo_supplier",
      });
      const operator = await createAccountWithKey(pool, {
        name: "operator",
        kind: "operator",
        id: "acct_operator",
        scopes: ["operate", "resell"],
      });
      await pool.query("UPDATE accounts SET resell_allowance_bytes = $2 WHERE id = ANY($1)", [
        [demo.accountId, operator.accountId],
        String(100 * 1024 ** 3),
      ]);
      const house = await createAccountWithKey(pool, { name: "x402", kind: "house", id: "acct_house" });
      // Registration sends each device to the relay of its country's region (docs/adr/0023).
      await pool.query("UPDATE settings SET value = $1 WHERE key = 'relay_regions'", [
        JSON.stringify(
          relayRegionsSetting(
            relayPorts.map((p, i) => ({ ...LOCAL_REGIONS[i]!, url: `ws://127.0.0.1:${p.ws}` })),
          ),
        ),
      ]);
      return { demo, supplier, operator, house };
    } finally {
      await pool.end();
    }
  };
  const [{ demo, supplier, operator, house }] = await together([seed(), fundTreasury()]);
  const relayUrl = `ws://127.0.0.1:${ports.relay}`;

  const apiVars = {
    ENVIRONMENT: "development",
    DATABASE_URL: env.DATABASE_URL,
    NEON_WS_PROXY: env.NEON_WS_PROXY,
    UPSTASH_REDIS_REST_URL: env.UPSTASH_REDIS_REST_URL,
    UPSTASH_REDIS_REST_TOKEN: env.UPSTASH_REDIS_REST_TOKEN,
    JWT_SECRET: env.JWT_SECRET,
    DEV_CLIENT_IP_CLASS: "residential",
    DEV_CLIENT_COUNTRY: "US",
    X402_BASE_RPC_URL: chain.rpcUrl,
    X402_BASE_PAY_TO: chain.payTo.address,
    // anvil mines one block per transaction; one confirmation is final there.
    X402_CONFIRMATIONS: "1",
    X402_HOUSE_ACCOUNT_ID: house.accountId,
    X402_GAS_WALLET_KEY: chain.keys.gasWallet,
    PAYOUT_TREASURY_KEY: treasuryKey,
    PAYOUT_CONFIRMATIONS: "1",
    GATEWAY_PUBLIC_HOST: "127.0.0.1",
    GATEWAY_HTTP_PORT: String(ports.gatewayHttp),
    GATEWAY_SOCKS_PORT: String(ports.gatewaySocks),
    // A simulated fleet (bench/fleet/main.ts) registers from this one address: raise the per-IP
    // register/refresh limits with STACK_REGISTER_PER_MINUTE (development only).
    ...(process.env.STACK_REGISTER_PER_MINUTE
      ? {
          RATE_LIMIT_REGISTER_PER_MINUTE: process.env.STACK_REGISTER_PER_MINUTE,
          RATE_LIMIT_REFRESH_PER_MINUTE: process.env.STACK_REGISTER_PER_MINUTE,
        }
      : {}),
  };
  const apiUrl = `http://127.0.0.1:${ports.api}`;
  const caFile = join(localDir, "target-ca.pem");
  const [, httpTarget, httpsTarget, relays, gateways, modem] = await together([
    startApi(apiVars).then(() => log(`api ${apiUrl}`)),
    // Local targets: what demo traffic and probes reach (loopback only).
    startHttpTarget().then((t) => {
      stopState.push(t.stop);
      return t;
    }),
    startProbeTarget().then((t) => {
      stopState.push(t.stop);
      writeFileSync(caFile, t.caPem);
      return t;
    }),
    // The relays and the gateways, as they run in production: their own processes.
    startRelays({ env, ports: relayPorts, echo }).then((rs) => {
      for (const r of rs) log(`relay ${r.url} region ${r.region} (internal ${r.internalUrl})`);
      return rs;
    }),
    startGateways({ env, echo, ports: gatewayPorts }).then((gs) => {
      for (const g of gs) log(`gateway ${g.http} ${g.socks5}`);
      return gs;
    }),
    // A production-modem stand-in (Debian's tinyproxy), registered by the operator as pool mbl.
    startTinyproxy().then((m) => {
      stopState.push(m.stop);
      return m;
    }),
  ]);

  // The cron never fires by itself under wrangler dev: drive it every minute like Cloudflare would.
  const cron = async () => {
    await fetch(`${apiUrl}/__scheduled?cron=${encodeURIComponent("* * * * *")}`).catch(() => {});
  };
  await cron();
  setInterval(cron, 60_000).unref();

  const redis = tcpRedis(env.REDIS_URL);
  stopState.push(() => redis.close());
  mkdirSync(join(localDir, "peers"), { recursive: true });
  /** A demo peer: the real SDK CLI, allowed to reach loopback targets (development flag). */
  const startPeer = async (name: string) => {
    const stateFile = join(localDir, "peers", `${name}.json`);
    const peer = startProcess(name, process.execPath, ["peer-node/src/cli.ts"], {
      cwd: root,
      echo,
      env: {
        API_KEY: supplier.apiKey,
        AGENT_NAME: name,
        PEER_API_URL: apiUrl,
        PEER_STATE_FILE: stateFile,
        PEER_ALLOW_PRIVATE_TARGETS: "true",
        COUNTRY: "US",
        VERBOSE: "true",
      },
    });
    const m = await peer.waitFor(/\[REGISTERED\] device=(agent_[0-9a-f]{16})/, 30_000);
    await peer.waitFor(/\[ACK\]/, 30_000);
    return { name, deviceId: m[1]!, stateFile };
  };
  const startPeers = async () => {
    const peers = await together([startPeer("demo-peer-1"), startPeer("demo-peer-2")]);
    await waitUntil(
      async () => {
        for (const p of peers) if (!(await redis.hgetall(keys.presence(p.deviceId))).relayId) return false;
        return true;
      },
      15_000,
      "demo peers online in Redis",
    );
    log(`peers ${peers.map((p) => `${p.name}=${p.deviceId}`).join(", ")}`);
    return peers;
  };
  const registerModem = async () => {
    const exit = await apiCall<{ id: string }>(apiUrl, "POST", "/v1/admin/modem-exits", operator.apiKey, {
      host: "127.0.0.1",
      port: modem.port,
      country: "us",
      carrier: "local",
    });
    log(`modem ${exit.id} on 127.0.0.1:${modem.port}`);
    return exit;
  };
  // The demo customer's pool key: any tier, so the username picks peer or mbl.
  const demoKey = () =>
    apiCall<{ id: string; username: string; secret: string }>(
      apiUrl,
      "POST",
      "/v1/reseller/pool-keys",
      demo.apiKey,
      {
        name: "demo",
        tier: "any",
        capBytes: 10 * 1024 ** 3,
      },
    );
  const startProber = async () => {
    // The fleet watchdog's own key (the operator's, so demo usage stays the demo's own).
    const watchdogKey = await apiCall<{ username: string; secret: string }>(
      apiUrl,
      "POST",
      "/v1/reseller/pool-keys",
      operator.apiKey,
      { name: "fleet watchdog", tier: "any", capBytes: 10 * 1024 ** 3 },
    );
    // The prober grades every exit through the same path customers take, against the HTTPS target;
    // its watchdog buys through the gateway like a customer every minute and records alerts.
    const prober = startProcess("prober", process.execPath, ["prober/main.ts"], {
      cwd: root,
      echo,
      env: {
        REDIS_URL: env.REDIS_URL,
        RELAY_SHARED_SECRET: env.RELAY_SHARED_SECRET,
        ENVIRONMENT: "development",
        DATABASE_URL: env.DATABASE_URL,
        NEON_WS_PROXY: env.NEON_WS_PROXY,
        PROBE_TARGET_HOST: "127.0.0.1",
        PROBE_TARGET_PORT: String(httpsTarget.port),
        PROBE_TARGET_CA: caFile,
        PROBER_ADMIN_PORT: String(ports.proberAdmin),
        // Still two clean passes before a demo exit is admitted, half a second apart rather than five, and
        // new devices noticed within half a second: `ready` comes about 7 s sooner on a laptop.
        PROBE_ADMIT_INTERVAL_MS: "500",
        PROBE_DISCOVER_MS: "500",
        WATCHDOG_PROXY_URL: `http://127.0.0.1:${ports.gatewayHttp}`,
        WATCHDOG_USERNAME: watchdogKey.username.replace(/-any-any$/, ""),
        WATCHDOG_PASSWORD: watchdogKey.secret,
      },
    });
    await prober.waitFor(/prober ready/, 30_000);
  };
  const [peers, modemExit, credential] = await together([
    startPeers(),
    registerModem(),
    demoKey(),
    startProber(),
  ]);

  // Demo exits are admitted after two clean probes; then the cron lists them. Run it now rather
  // than at the next minute so `ready` means the curl lines below work.
  const exits = [...peers.map((p) => p.deviceId), modemExit.id];
  await waitUntil(
    async () => {
      for (const id of exits) if ((await redis.hgetall(keys.probe(id))).verified !== "1") return false;
      return true;
    },
    60_000,
    "the prober to verify the demo exits",
  );
  await waitUntil(
    async () => {
      await cron();
      for (const id of exits) if ((await redis.raw.sismember(keys.poolListed(), id)) !== 1) return false;
      return true;
    },
    30_000,
    "the cron to list the demo exits",
  );
  log(`exits verified and listed: ${exits.join(", ")}`);

  const gatewayHttp = `127.0.0.1:${ports.gatewayHttp}`;
  const gatewaySocks = `127.0.0.1:${ports.gatewaySocks}`;
  const userPeer = `${credential.username.replace(/-any-any$/, "")}-peer-us`;
  const userMbl = `${credential.username.replace(/-any-any$/, "")}-mbl-us`;
  const stack: Record<string, unknown> = {
    startedAt: new Date().toISOString(),
    api: { url: apiUrl, health: `${apiUrl}/health`, openapi: `${apiUrl}/openapi.json` },
    redis: { url: env.REDIS_URL, restUrl: env.UPSTASH_REDIS_REST_URL },
    postgres: { url: env.DATABASE_URL.replace(/:[^:@/]+@/, ":***@"), wsProxy: env.NEON_WS_PROXY },
    relay: {
      url: relayUrl,
      internalUrl: `http://127.0.0.1:${ports.relayInternal}`,
      metrics: `http://127.0.0.1:${ports.relayInternal}/metrics`,
    },
    // Every relay and gateway (STACK_RELAYS, STACK_GATEWAYS); `relay`/`gateway` are the first ones.
    relays: relays.map((r) => ({
      id: r.id,
      region: r.region,
      countries: r.countries,
      url: r.url,
      internalUrl: r.internalUrl,
      metrics: r.metrics,
    })),
    gateways: gateways.map((g) => ({ id: g.id, http: g.http, socks5: g.socks5, metrics: g.metrics })),
    peers,
    targets: { http: httpTarget.url, https: `https://127.0.0.1:${httpsTarget.port}`, caFile },
    demo: {
      accountId: demo.accountId,
      apiKey: demo.apiKey,
      credential: { id: credential.id, username: credential.username, password: credential.secret },
      curl: `curl -s -x http://${userPeer}:${credential.secret}@${gatewayHttp} ${httpTarget.url}/`,
      curlHttps: `curl -s --cacert ${caFile} -x http://${userMbl}:${credential.secret}@${gatewayHttp} https://127.0.0.1:${httpsTarget.port}/bytes/1024 -o /dev/null -w '%{http_code} %{size_download}\\n'`,
      curlSocks: `curl -s --socks5-hostname ${userPeer}:${credential.secret}@${gatewaySocks} ${httpTarget.url}/`,
    },
    gateway: {
      http: `http://${gatewayHttp}`,
      socks5: `socks5://${gatewaySocks}`,
      metrics: `http://127.0.0.1:${ports.gatewayAdmin}/metrics`,
    },
    modem: { id: modemExit.id, proxy: `http://127.0.0.1:${modem.port}`, pool: "mbl", country: "us" },
    supplier: {
      accountId: supplier.accountId,
      apiKey: supplier.apiKey,
      earnings: `${apiUrl}/v1/peer/earnings`,
    },
    operator: { accountId: operator.accountId, apiKey: operator.apiKey, alerts: `${apiUrl}/v1/admin/alerts` },
    chain: {
      rpcUrl: chain.rpcUrl,
      chainId: BASE_CHAIN_ID,
      usdc: chain.usdc,
      payTo: chain.payTo.address,
      // Dev-only keys generated for this run; `npm run demo:agent` plays the agent with them.
      agent: { address: chain.agent.address, privateKey: chain.keys.agent },
    },
    x402: { pricing: `${apiUrl}/v1/x402/pool/pricing`, houseAccountId: house.accountId },
    pages: {
      status: `${apiUrl}/status`,
      quickstart: `${apiUrl}/pool-quickstart`,
      // Sign in with supplier.apiKey (supplier page) or operator.apiKey (operators' console).
      farmer: `${apiUrl}/farmer`,
      admin: `${apiUrl}/admin`,
      signIn: `${apiUrl}/sign-in`,
    },
    secrets: { jwtSecret: "(generated per run)", relaySharedSecret: "(generated per run)" },
  };
  writeFileSync(join(localDir, "stack.json"), `${JSON.stringify(stack, null, 2)}\n`);
  // stack.json masks the database password; local tools (npm run audit:verify) read the URL here.
  writeFileSync(join(localDir, "database-url"), `${env.DATABASE_URL}\n`, { mode: 0o600 });
  // What a newcomer opens first: the pages and endpoints this run serves (all in stack.json too).
  const serving: [string, string][] = [
    ["API", apiUrl],
    ["status page", `${apiUrl}/status`],
    ["quickstart", `${apiUrl}/pool-quickstart`],
    ["supplier", `${apiUrl}/farmer (sign in with supplier.apiKey)`],
    ["operators", `${apiUrl}/admin (sign in with operator.apiKey)`],
    ["health", `${apiUrl}/health`],
    ["OpenAPI", `${apiUrl}/openapi.json`],
    ["agent guide", `${apiUrl}/skill.md`],
    ["x402 pricing", `${apiUrl}/v1/x402/pool/pricing`],
    ["stock", `${apiUrl}/v1/gateway/pool/stock`],
    ["gateway", gateways.map((g) => `${g.http} (HTTP), ${g.socks5}`).join("; ")],
    ["relay", relays.map((r) => `${r.url} (${r.region})`).join(", ")],
  ];
  for (const [what, url] of serving) log(`${`${what}:`.padEnd(14)}${url}`);
  console.log(
    `ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: api ${apiUrl}, pages ${["/status", "/pool-quickstart", "/farmer", "/admin"].map((p) => apiUrl + p).join(" ")} (see ${join(localDir, "stack.json")}; Ctrl-C stops everything)`,
  );
}

main().catch(async (err) => {
  // Ctrl-C reaches the whole process group: a child of ours (openssl, a server) may die of it and
  // fail main() before our own SIGINT handler has run. Let that signal land before judging.
  await new Promise((r) => setTimeout(r, 250));
  // Interrupted mid-start: the children were stopped under main(), which then fails; not an error.
  if (stopping) return;
  console.error(`[stack] failed: ${(err as Error).stack ?? err}`);
  await shutdown(1);
});
