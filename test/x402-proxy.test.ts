// The dedicated port (/v1/x402/proxy) as an agent meets it: the real API under wrangler dev (workerd)
// verifying real USDC transfers on a local anvil chain, modems registered through the admin API, and
// the real gateway routing the bought credential to a tinyproxy "modem" (docs/adr/0005).

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { x402HTTPClient } from "@x402/core/client";
import { parsePaymentRequired } from "@x402/core/schemas";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { type Account, parseAbi, toHex } from "viem";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EvmChain } from "../dev/chains/evm.ts";
import { reservationsJob } from "../functions/src/jobs/reservations.ts";
import { redeemDedicatedPurchase } from "../functions/src/services/x402-dedicated.ts";
import {
  curl,
  type Modem,
  makeCredential,
  startTargets,
  startTinyproxy,
  type Targets,
} from "../gateway-node/testing.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint, releaseEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { CAIP2 } from "../shared/x402/networks.ts";
import { decodeBase64Json } from "../shared/x402/quote.ts";
import { boundPaymentHeader, signedEip3009Header } from "../shared/x402/testing.ts";
import { stateEnv } from "./helpers/env.ts";
import { deleteAccount, deletePurchasesBy, newPayer, transferUsdc } from "./helpers/x402.ts";
import { connectEvmChain, sharedX402 } from "./helpers/x402-fixture.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = tcpRedis(e.REDIS_URL);
const erc20 = parseAbi(["function balanceOf(address owner) view returns (uint256)"]);
const uid = () => crypto.randomUUID().slice(0, 8);

// The run's shared chain, gateway and API (test/helpers/x402-fixture.ts); the API's purchase
// answers point at the shared gateway. This file's tenant: its payers, operator and modems.
const x402 = await sharedX402();
const chain: EvmChain = connectEvmChain(x402);
const api = { url: x402.apiUrl };
const gw = { httpPort: x402.gatewayHttpPort };
const { houseAccountId, houseName } = x402;
let modem: Modem;
let targets: Targets;
let webhook: Server;
const rotations: { body: Record<string, string>; headers: IncomingMessage["headers"] }[] = [];
let operator: { accountId: string; apiKey: string };
const modemIds: string[] = [];
/** The tinyproxy modem of country C.main, with a rotation webhook. */
let mainModem: string;
const payers: string[] = [];

// One dedicated day at the default `x402_dedicated_pricing` row (migration 0008): $6.
const PRICE_DAY = 6_000_000n;
// Countries from the user-assigned ISO range, private to this file.
const C = { main: "xs", race: "xu", cross: "xv", fetch: "xw" } as const;

beforeAll(async () => {
  [modem, targets] = await Promise.all([startTinyproxy(), startTargets()]);
  webhook = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => {
      raw += d;
    });
    req.on("end", () => {
      rotations.push({ body: JSON.parse(raw || "{}"), headers: req.headers });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => webhook.listen(0, "127.0.0.1", r));
  operator = await createAccountWithKey(db, { name: `op_${uid()}`, kind: "operator" });
  mainModem = await registerModem({
    country: C.main,
    port: modem.port,
    rotationUrl: `http://127.0.0.1:${(webhook.address() as AddressInfo).port}/rotate?token=op`,
  });
}, 120_000);

afterAll(async () => {
  await Promise.all([modem?.stop(), targets?.stop()]);
  webhook?.close();
  for (const id of modemIds) {
    await releaseEndpoint(redis, id);
    await delistEndpoint(redis, id);
  }
  await db.query("DELETE FROM modem_rotations WHERE modem_exit_id = ANY($1)", [modemIds]);
  await db.query("DELETE FROM modem_reservations WHERE modem_exit_id = ANY($1)", [modemIds]);
  await deletePurchasesBy(db, redis, payers);
  await db.query("DELETE FROM modem_exits WHERE id = ANY($1)", [modemIds]);
  if (operator) await deleteAccount(db, operator.accountId);
  await db.end();
  await redis.close();
});

// biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
type Json = Record<string, any>;

async function call(path: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(`${api.url}${path}`, { method, headers });
  return { res, body: (await res.json()) as Json };
}

/** Registers a modem exit through the operator API (which lists it in the selection pool). */
async function registerModem(input: {
  country: string;
  port?: number;
  rotationUrl?: string;
  carrier?: string;
}) {
  const res = await fetch(`${api.url}/v1/admin/modem-exits`, {
    method: "POST",
    headers: { "X-API-Key": operator.apiKey, "Content-Type": "application/json" },
    body: JSON.stringify({
      // Modems nobody dials in this file get a name of their own instead of a port.
      host: input.port ? "127.0.0.1" : `modem-${uid()}.test`,
      port: input.port ?? 8080,
      country: input.country,
      ...(input.carrier ? { carrier: input.carrier } : {}),
      ...(input.rotationUrl ? { rotationUrl: input.rotationUrl } : {}),
    }),
  });
  const body = (await res.json()) as Json;
  expect(res.status, JSON.stringify(body)).toBe(201);
  modemIds.push(body.id);
  return body.id as string;
}

const payer = (usdc?: bigint) => newPayer(chain, payers, usdc);
const transfer = (from: Account, amount: bigint) => transferUsdc(chain, from, amount);

/** Ends one reservation as if its days had passed, then runs the cron job that releases it. */
async function expire(credentialId: string) {
  await db.query(
    `UPDATE modem_reservations SET starts_at = now() - interval '2 days', ends_at = now() - interval '1 second'
      WHERE credential_id = $1`,
    [credentialId],
  );
  return reservationsJob.run({ db, redis, now: () => new Date() } as never);
}

async function credentialOf(hash: string): Promise<string> {
  const { rows } = await db.query<{ credential_id: string }>(
    "SELECT credential_id FROM x402_payments WHERE consumption_key = $1",
    [`base:${hash.toLowerCase()}`],
  );
  return rows[0]!.credential_id;
}

const order = (country: string, days = 1) => `/v1/x402/proxy?country=${country}&duration=${days}`;
const viaGateway = (proxyUrl: string) =>
  curl(["-x", proxyUrl, "-D", "-", `http://127.0.0.1:${targets.httpPort}/`]);

describe("x402 dedicated port on anvil", () => {
  it("an unpaid request answers 402 like the pool product: x402 v1 body, v2 PAYMENT-REQUIRED header, no-store, free modems per country", async () => {
    const { res, body } = await call(order(C.main, 2));
    expect(res.status, JSON.stringify(body)).toBe(402);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(body).toMatchObject({
      x402Version: 1,
      accepts: [
        {
          scheme: "exact",
          network: "base",
          maxAmountRequired: (2n * PRICE_DAY).toString(),
          asset: chain.usdc,
          payTo: chain.payTo.address,
          resource: `${api.url}/v1/x402/proxy?country=${C.main}&duration=2`,
        },
      ],
      order: { country: C.main, durationDays: 2, includedGB: "6", priceMicroUsdc: "12000000" },
      catalog: { pricePerDayMicroUsdc: "6000000", includedGBPerDay: "3", duration: { min: 1, max: 30 } },
    });
    expect(body.availability[C.main]).toEqual({ free: 1, carriers: {} });
    // Counts only: never a modem's address or id.
    expect(JSON.stringify(body)).not.toContain(`127.0.0.1:${modem.port}`);
    expect(JSON.stringify(body)).not.toContain(mainModem);
    expect(parsePaymentRequired(body).success).toBe(true);
    const v2 = new x402HTTPClient(new x402Client()).getPaymentRequiredResponse(
      (n) => res.headers.get(n),
      body,
    );
    expect(v2).toMatchObject({ x402Version: 2, accepts: [{ network: CAIP2.base, amount: "12000000" }] });

    const pricing = await call("/v1/x402/proxy/pricing");
    expect(pricing.body).toMatchObject({ purchasable: true, pricePerDayUsdc: "6.000000" });
    expect(pricing.body.availability[C.main].free).toBe(1);
  });

  it("a bad order is a 400 naming the field; a country without a free modem is 503 E_NO_FREE_MODEM, not a 402", async () => {
    for (const [query, field] of [
      [`country=${C.main}`, "duration"],
      [`country=${C.main}&duration=0`, "duration"],
      [`country=${C.main}&duration=31`, "duration"],
      [`country=${C.main}&duration=1.5`, "duration"],
      ["country=usa&duration=1", "country"],
      [`country=${C.main}&duration=1&carrier=t-mobile`, "carrier"],
    ] as const) {
      const { res, body } = await call(`/v1/x402/proxy?${query}`);
      expect(res.status, query).toBe(400);
      expect(body.error.details.issues[0].path, query).toBe(field);
    }
    const none = await call(order("xz"));
    expect(none.res.status).toBe(503);
    expect(none.body.error.code).toBe("E_NO_FREE_MODEM");
    expect(none.res.headers.get("retry-after")).toBe("60");
  });

  it("pay, retry with the hash: a credential the real gateway routes to the reserved modem only; the modem serves nobody else; expiry gives it back", async () => {
    const agent = await payer();
    const hash = await transfer(agent, PRICE_DAY);
    const { res, body } = await call(order(C.main), { "Payment-Signature": hash });
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      product: { type: "proxy", country: C.main, durationDays: 1, includedGB: 3 },
      proxy: { host: "127.0.0.1", httpPort: gw.httpPort, username: `psx_${houseName}-mbl-${C.main}` },
      rotationUrl: `${api.url}/v1/x402/manage/proxy/rotate`,
      rotation: { available: true, method: "POST", header: "X-Session-Token", minIntervalSeconds: 60 },
      reservation: { active: true },
      credit: { allocatedBytes: 3_000_000_000, enabled: true },
      payment: { network: "base", txRef: hash, status: "minted" },
    });
    expect(body.sessionToken).toMatch(/^x402s_[0-9a-f]{64}$/);
    expect(body.proxy.password).toMatch(/^pak_[0-9a-f]{64}$/);
    expect(Date.parse(body.expiresAt) - Date.now()).toBeGreaterThan(86_000_000);
    expect(decodeBase64Json(res.headers.get("payment-response") ?? "")).toMatchObject({ transaction: hash });

    // What the gateway reads: the key pinned to the modem, the modem reserved for the key.
    const keyId = await credentialOf(hash);
    const modemId = mainModem;
    expect(await redis.hgetall(keys.credential(keyId))).toMatchObject({ endpointId: modemId, tier: "mbl" });
    expect(await redis.get(keys.endpointReservation(modemId))).toBe(keyId);
    expect(await redis.raw.zscore(keys.poolIndex("mbl", C.main, "any"), modemId)).toBeNull();

    // Through the real gateway: the renter gets the modem, even naming another country or pool.
    expect((await viaGateway(body.proxy.http)).stdout).toMatch(/^HTTP\/1\.1 200[\s\S]*hello$/);
    const otherName = body.proxy.http.replace(`-mbl-${C.main}`, "-any-zz");
    expect((await viaGateway(otherName)).stdout).toMatch(/^HTTP\/1\.1 200[\s\S]*hello$/);
    // Another customer of the same country is never handed the reserved modem.
    const shared = await makeCredential(redis, { tier: "mbl" });
    const sharedUrl = `http://${shared.username(`mbl-${C.main}`)}:${shared.secret}@127.0.0.1:${gw.httpPort}`;
    expect((await viaGateway(sharedUrl)).stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*E_NO_STOCK/);
    expect((await call("/v1/x402/proxy/pricing")).body.availability[C.main]).toBeUndefined();

    // Manage: status and re-emission with the session token; the pool's manage routes refuse it.
    const token = { "X-Session-Token": body.sessionToken as string };
    const status = await call("/v1/x402/manage/proxy/status", token);
    expect(status.body).toMatchObject({
      username: body.proxy.username,
      reservation: { active: true, expiresAt: body.expiresAt },
      rotation: { available: true, last: null },
      credit: { allocatedBytes: 3_000_000_000, enabled: true },
    });
    // The gateway metered the renter's requests above like any other key's.
    expect(status.body.credit.usedBytes).toBeGreaterThan(0);
    const again = await call("/v1/x402/manage/proxy/connection", token);
    expect(again.body.proxy.password).toBe(body.proxy.password);
    const wrongProduct = await call("/v1/x402/manage/pool/credit", token);
    expect(wrongProduct.res.status).toBe(409);
    expect(wrongProduct.body.error.message).toMatch(/manage\/proxy/);
    const bare = await call(order(C.main), { "Payment-Signature": hash });
    expect(bare.res.status).toBe(409);
    expect(bare.body.error.code).toBe("E_PAYMENT_USED");

    // Expiry: the cron job releases the modem back into the shared pool; the renter's key stops.
    const started = Date.now();
    expect(await expire(keyId)).toMatchObject({ released: 1 });
    console.log(`reservation release by the cron job: ${Date.now() - started} ms`);
    expect(await redis.get(keys.endpointReservation(modemId))).toBeNull();
    expect((await viaGateway(sharedUrl)).stdout).toMatch(/^HTTP\/1\.1 200[\s\S]*hello$/);
    expect((await viaGateway(body.proxy.http)).stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*no longer reserved/);
    const ended = await call("/v1/x402/manage/proxy/status", token);
    expect(ended.body.reservation).toMatchObject({ active: false });
    expect(ended.body.reservation.releasedAt).not.toBeNull();
    const late = await call("/v1/x402/manage/proxy/rotate", token, "POST");
    expect(late.res.status).toBe(409);
    expect((await call("/v1/x402/proxy/pricing")).body.availability[C.main].free).toBe(1);
  });

  it("rotation calls the modem's webhook and answers 202 with a rotation id, at most once a minute", async () => {
    const agent = await payer();
    const { body } = await call(order(C.main), { "Payment-Signature": await transfer(agent, PRICE_DAY) });
    expect(body.rotation.available).toBe(true);
    const token = { "X-Session-Token": body.sessionToken as string };
    const before = rotations.length;
    const first = await call("/v1/x402/manage/proxy/rotate", token, "POST");
    expect(first.res.status, JSON.stringify(first.body)).toBe(202);
    expect(first.body).toMatchObject({ status: "accepted" });
    expect(first.body.rotationId).toMatch(/^mrot_[0-9a-f]+$/);
    expect(rotations.length).toBe(before + 1);
    expect(rotations.at(-1)).toMatchObject({
      body: { rotationId: first.body.rotationId, modemId: mainModem, reservationId: body.reservation.id },
      headers: { "x-rotation-id": first.body.rotationId },
    });
    const second = await call("/v1/x402/manage/proxy/rotate", token, "POST");
    expect(second.res.status).toBe(429);
    expect(rotations.length).toBe(before + 1);
    const status = await call("/v1/x402/manage/proxy/status", token);
    expect(status.body.rotation.last).toMatchObject({ id: first.body.rotationId, status: "accepted" });
    await expire(await credentialOf(body.payment.txRef));
  });

  it("two concurrent buyers, one free modem: one gets it, the other 503 E_NO_FREE_MODEM and its payment is not consumed (it buys later with the same hash)", async () => {
    await registerModem({ country: C.race });
    const [a, b] = [await payer(), await payer()];
    const [ha, hb] = [await transfer(a, PRICE_DAY), await transfer(b, PRICE_DAY)];
    const results = await Promise.all([ha, hb].map((h) => call(order(C.race), { "Payment-Signature": h })));
    const statuses = results.map((r) => r.res.status).sort();
    expect(statuses, JSON.stringify(results.map((r) => r.body))).toEqual([200, 503]);
    const winner = results.find((r) => r.res.status === 200)!;
    const loser = results.find((r) => r.res.status === 503)!;
    const loserHash = loser === results[0] ? ha : hb;
    expect(loser.body.error).toMatchObject({
      code: "E_NO_FREE_MODEM",
      details: { consumed: false, consumptionKey: `base:${loserHash}` },
    });
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE consumption_key = $1", [
      `base:${loserHash}`,
    ]);
    expect(rows).toHaveLength(0);
    expect((await call(order(C.race))).res.status).toBe(503); // no 402 while nothing is free

    // No webhook on this modem: rotation is refused with a clear 501.
    const noHook = await call(
      "/v1/x402/manage/proxy/rotate",
      { "X-Session-Token": winner.body.sessionToken },
      "POST",
    );
    expect(noHook.res.status).toBe(501);
    expect(noHook.body.error).toMatchObject({ code: "E_ROTATION_UNAVAILABLE" });
    expect(noHook.body.error.message).toMatch(/no rotation webhook/);

    await expire(await credentialOf(winner.body.payment.txRef));
    const later = await call(order(C.race), { "Payment-Signature": loserHash });
    expect(later.res.status, JSON.stringify(later.body)).toBe(200);
    expect(later.body.payment).toMatchObject({ status: "minted", txRef: loserHash });
    await expire(await credentialOf(loserHash));
  });

  it("12 concurrent redemptions (no Redis guard) for 3 free modems reserve each modem once; the 9 refused consume nothing", async () => {
    const country = "xt";
    // A retry starts from none: a failed attempt may have left modems of this country free.
    await db.query("UPDATE modem_exits SET deleted_at = now() WHERE country = $1 AND deleted_at IS NULL", [
      country,
    ]);
    const free = [
      await registerModem({ country }),
      await registerModem({ country }),
      await registerModem({ country }),
    ];
    const pools = Array.from({ length: 12 }, () => createPool(e.DATABASE_URL, e.NEON_WS_PROXY));
    const txRefs = pools.map(() => toHex(crypto.getRandomValues(new Uint8Array(32))));
    try {
      const started = Date.now();
      const results = await Promise.all(
        pools.map((pool, i) =>
          redeemDedicatedPurchase(
            { pool, redis, now: () => new Date() },
            {
              houseAccountId,
              payment: {
                network: "base",
                txRef: txRefs[i]!,
                payer: chain.agent.address,
                amount: PRICE_DAY,
                payerProven: false,
                authorizationKey: null,
              },
              order: {
                country,
                carrier: undefined,
                days: 1,
                priceMicro: PRICE_DAY,
                includedBytes: 3_000_000_000n,
              },
              sessionToken: undefined,
            },
          ),
        ),
      );
      console.log(`12 concurrent dedicated redemptions for 3 modems: ${Date.now() - started} ms`);
      const minted = results.filter((r) => r.kind === "minted");
      expect(minted).toHaveLength(3);
      expect(results.filter((r) => r.kind === "refused")).toHaveLength(9);
      const reserved = minted.map((r) => (r.kind === "minted" ? r.credential.endpoint_id : null));
      expect(new Set(reserved)).toEqual(new Set(free));
      const { rows } = await db.query<{ n: string }>(
        "SELECT count(*) AS n FROM x402_payments WHERE consumption_key = ANY($1)",
        [txRefs.map((t) => `base:${t}`)],
      );
      expect(Number(rows[0]!.n)).toBe(3);
      for (const r of minted) if (r.kind === "minted") await expire(r.credential.id);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it("a hash used for the pool product is refused for the dedicated port with 409, and vice versa", async () => {
    await db.query(
      `INSERT INTO pool_rollup (pool, country, registered, online, verified, listed, tier_fast, tier_medium, tier_slow, tier_unknown, computed_at)
       VALUES ('mbl', 'us', 3, 3, 3, 3, 3, 0, 0, 0, now())
       ON CONFLICT (pool, country) DO UPDATE SET listed = GREATEST(pool_rollup.listed, 3)`,
    );
    await registerModem({ country: C.cross });
    const POOL = "/v1/x402/pool?tier=mbl&country=us&traffic=1.5"; // $6 at $4/GB: the same amount
    const agent = await payer();
    const poolHash = await transfer(agent, PRICE_DAY);
    expect((await call(POOL, { "Payment-Signature": poolHash })).res.status).toBe(200);
    const asProxy = await call(order(C.cross), { "Payment-Signature": poolHash });
    expect(asProxy.res.status).toBe(409);
    expect(asProxy.body.error).toMatchObject({ code: "E_PAYMENT_USED" });
    expect(asProxy.body.error.message).toMatch(/different product/);

    const proxyHash = await transfer(agent, PRICE_DAY);
    const bought = await call(order(C.cross), { "Payment-Signature": proxyHash });
    expect(bought.res.status).toBe(200);
    const asPool = await call(POOL, { "Payment-Signature": proxyHash });
    expect(asPool.res.status).toBe(409);
    expect(asPool.body.error.message).toMatch(/different product/);
    await expire(await credentialOf(proxyHash));
  });

  it("a binding signed by the payer over the dedicated resource re-emits the port with a fresh password, same modem", async () => {
    const modemId = await registerModem({ country: "xp" });
    const agent = await payer();
    const hash = await transfer(agent, PRICE_DAY);
    const first = await call(order("xp"), { "Payment-Signature": hash });
    expect(first.res.status).toBe(200);
    const header = await boundPaymentHeader(agent, { resource: `${api.url}${order("xp")}`, txRef: hash });
    const again = await call(order("xp"), { "PAYMENT-SIGNATURE": header });
    expect(again.res.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.payment.status).toBe("reemitted");
    expect(again.body.proxy.password).not.toBe(first.body.proxy.password);
    expect(again.body.reservation.id).toBe(first.body.reservation.id);
    const keyId = await credentialOf(hash);
    expect(await redis.hgetall(keys.credential(keyId))).toMatchObject({ endpointId: modemId });
    await expire(keyId);
  });

  it("unmodified @x402/fetch (EIP-3009 exact) rents a dedicated modem from the running API", async () => {
    await registerModem({ country: C.fetch });
    const agent = await payer(10_000_000n);
    // The client's own spend cap (default $1) must admit a day of a dedicated modem.
    const client = x402Client.fromConfig({
      schemes: [{ network: CAIP2.base, client: new ExactEvmScheme(agent) }],
      spendControls: { maxAmountPerPayment: "$10" },
    });
    const pay = wrapFetchWithPayment(fetch, client);
    const res = await pay(`${api.url}${order(C.fetch)}`);
    const body = (await res.json()) as Json;
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      product: { type: "proxy", country: C.fetch },
      payment: { payer: agent.address, status: "minted" },
    });
    await expire(await credentialOf(body.payment.txRef));
  });

  it("an EIP-3009 authorization for an order with no free modem is refused before we settle it: no USDC moves", async () => {
    const agent = await payer(10_000_000n);
    const header = await signedEip3009Header(agent, {
      usdc: chain.usdc,
      payTo: chain.payTo.address,
      price: PRICE_DAY,
      resource: `${api.url}${order("xz")}`,
    });
    const { res, body } = await call(order("xz"), { "PAYMENT-SIGNATURE": header });
    expect(res.status).toBe(503);
    expect(body.error.code).toBe("E_NO_FREE_MODEM");
    expect(body.error.message).toMatch(/nothing was charged/);
    const balance = await chain.publicClient.readContract({
      address: chain.usdc,
      abi: erc20,
      functionName: "balanceOf",
      args: [agent.address],
    });
    expect(balance).toBe(10_000_000n);
  });

  it("discovery documents and /openapi.json list the dedicated port", async () => {
    const wk = (await (await fetch(`${api.url}/.well-known/x402.json`)).json()) as Json;
    expect(wk.resources.map((r: Json) => r.resource)).toContain(`${api.url}/v1/x402/proxy`);
    const v1 = (await (await fetch(`${api.url}/v1/x402/.well-known`)).json()) as Json;
    expect(v1.resources.map((r: Json) => r.resource)).toContain(`${api.url}/v1/x402/proxy`);
    expect(await (await fetch(`${api.url}/skill.md`)).text()).toMatch(/\/v1\/x402\/manage\/proxy\/rotate/);
    expect(await (await fetch(`${api.url}/llms.txt`)).text()).toMatch(/\/v1\/x402\/proxy\/pricing/);
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as Json;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/x402/proxy",
        "/v1/x402/proxy/pricing",
        "/v1/x402/manage/proxy/status",
        "/v1/x402/manage/proxy/rotate",
        "/v1/x402/manage/proxy/connection",
      ]),
    );
  });
});
