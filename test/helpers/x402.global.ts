/**
 * vitest globalSetup of the `x402` project (vitest.config.ts): boots what its test files share once
 * per run instead of once per file (docs/adr/0022): an anvil chain, a customer gateway, a house
 * account with a funded gas wallet, and one API under `wrangler dev` that mints under that house and
 * points its answers at that gateway. vitest runs this only when a file of the project is selected.
 *
 * The boot runs in the background: setup returns at once so the other files start, and the
 * project's files wait for the fixture file this writes (`sharedX402()` in x402-fixture.ts).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { type EvmChain, startEvmChain } from "../../dev/chains/evm.ts";
import { loadGatewayConfig } from "../../gateway-node/config.ts";
import { type Gateway, startGateway } from "../../gateway-node/gateway.ts";
import { testGatewayEnv } from "../../gateway-node/testing.ts";
import { createPool } from "../../shared/db/pool.ts";
import { tcpRedis } from "../../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./api.ts";
import { stateEnv } from "./env.ts";
import {
  baseRailVars,
  createHouseAccount,
  deleteAccount,
  deleteGasWallet,
  deletePurchases,
  fundedGasKey,
} from "./x402.ts";
import type { X402Fixture } from "./x402-fixture.ts";

export default function setup(project: TestProject) {
  const e = stateEnv();
  const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
  const redis = tcpRedis(e.REDIS_URL);
  const dir = mkdtempSync(join(e.PEERPROXY_TEST_TMP, "x402-fixture-"));
  const fixtureFile = join(dir, "fixture.json");
  let chain: EvmChain | undefined;
  let gateway: Gateway | undefined;
  let api: Api | undefined;
  let houseAccountId: string | undefined;
  let gasKey: `0x${string}` | undefined;

  const boot = async (): Promise<X402Fixture> => {
    const t0 = Date.now();
    const houseName = `x402shared_${Math.random().toString(36).slice(2, 8)}`;
    [chain, gateway, houseAccountId] = await Promise.all([
      startEvmChain(),
      startGateway(loadGatewayConfig(testGatewayEnv()), { redis }),
      createHouseAccount(db, houseName),
    ]);
    gasKey = await fundedGasKey(chain);
    api = await startApi(
      {
        ...stateVars(e),
        ...baseRailVars(chain, houseAccountId),
        X402_GAS_WALLET_KEY: gasKey,
        // Every file's purchases come from 127.0.0.1; the per-IP limit itself is pinned in
        // x402-guards (its own API) and by regenerate in x402-pool.
        X402_RATE_LIMIT_PURCHASE_PER_MINUTE: "1000",
        // The purchase answer's proxy URL is then directly usable against the shared gateway.
        GATEWAY_PUBLIC_HOST: "127.0.0.1",
        GATEWAY_HTTP_PORT: String(gateway.httpPort),
      },
      { tmp: e.PEERPROXY_TEST_TMP, logDir: dir },
    );
    console.log(
      `x402 fixture: anvil, gateway and wrangler dev up in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    return {
      rpcUrl: chain.rpcUrl,
      fakeUsdc: chain.fakeUsdc,
      payToKey: chain.keys.payTo,
      agentKey: chain.keys.agent,
      gasWalletKey: chain.keys.gasWallet,
      minterKey: chain.keys.minter,
      apiUrl: api.url,
      apiLogDir: dir,
      houseAccountId,
      houseName,
      gatewayHttpPort: gateway.httpPort,
    };
  };
  const booted = boot().then(
    (fixture) => writeFileSync(fixtureFile, JSON.stringify({ fixture })),
    (err: Error) => writeFileSync(fixtureFile, JSON.stringify({ error: err.stack ?? String(err) })),
  );
  project.provide("x402FixtureFile", fixtureFile);

  return async () => {
    await booted;
    await api?.stop();
    await gateway?.close();
    await chain?.stop();
    if (houseAccountId) {
      // What the files did not clean up by payer (an untracked wallet's purchase) goes with the house.
      await deletePurchases(db, redis, houseAccountId);
      await deleteAccount(db, houseAccountId);
    }
    if (gasKey) await deleteGasWallet(db, gasKey);
    await db.end();
    await redis.close();
  };
}
