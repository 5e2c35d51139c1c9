// The x402 purchase as an agent meets it: the real API under wrangler dev (workerd) verifying real
// USDC transfers on a local anvil chain (chain 8453, token at the canonical Base USDC address),
// minting into this run's real Postgres and Redis.
import { x402HTTPClient } from "@x402/core/client";
import { parsePaymentRequired } from "@x402/core/schemas";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { type Account, createWalletClient, type Hex, http, toHex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { wrapFetchWithPayment as wrapFetchV1 } from "x402-fetch";
import type { EvmChain } from "../dev/chains/evm.ts";
import { redeemPoolPurchase } from "../functions/src/services/x402-purchase.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { BASE_USDC_EIP712, CAIP2 } from "../shared/x402/networks.ts";
import { decodeBase64Json, encodeBase64Json } from "../shared/x402/quote.ts";
import { boundPaymentHeader, signedEip3009Header } from "../shared/x402/testing.ts";
import { stateEnv } from "./helpers/env.ts";
import { deletePurchasesBy, newPayer, stockUs, transferUsdc } from "./helpers/x402.ts";
import { connectEvmChain, sharedApiOutput, sharedX402 } from "./helpers/x402-fixture.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = tcpRedis(e.REDIS_URL);

// The run's shared chain and API (test/helpers/x402-fixture.ts): the API mints under the fixture's
// house account with a rate limit of 1000 per minute (the 100-way race below comes from one IP; the
// limit itself is pinned with regenerate). This file's tenant is its payers.
const x402 = await sharedX402();
const chain: EvmChain = connectEvmChain(x402);
const api = { url: x402.apiUrl };
const { houseAccountId, houseName } = x402;

beforeAll(async () => {
  await stockUs(db);
});

afterAll(async () => {
  await deletePurchasesBy(db, redis, payers);
  await db.end();
  await redis.close();
});

const payers: string[] = [];

afterEach((ctx) => {
  // What the API said, when a test fails: the Worker's own log is the first thing to read.
  if (ctx.task.result?.state === "fail") console.log(sharedApiOutput(x402));
});

// biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
type Json = Record<string, any>;

async function call(path: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(`${api.url}${path}`, { method, headers });
  return { res, body: (await res.json()) as Json };
}

/** A fresh wallet with ETH and `usdc` micro-USDC: each test is its own payer. */
const payer = (usdc?: bigint) => newPayer(chain, payers, usdc);
const transfer = (from: Account, amount: bigint, opts?: Parameters<typeof transferUsdc>[3]) =>
  transferUsdc(chain, from, amount, opts);

const ORDER = "/v1/x402/pool?tier=mbl&country=us&traffic=0.5";
const PRICE = 2_000_000n; // 0.5 GB at the default $4/GB

async function buy(query: string, proof: Record<string, string>) {
  await stockUs(db);
  return call(query, proof);
}

describe("x402 pool purchase on anvil", () => {
  it("an unpaid request answers 402 with the x402 v1 body, the v2 PAYMENT-REQUIRED header and live countries", async () => {
    await stockUs(db);
    const { res, body } = await call(ORDER);
    expect(res.status).toBe(402);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(body).toMatchObject({
      x402Version: 1,
      accepts: [
        {
          scheme: "exact",
          network: "base",
          maxAmountRequired: PRICE.toString(),
          asset: chain.usdc,
          payTo: chain.payTo.address,
          extra: BASE_USDC_EIP712,
        },
      ],
      catalog: { tiers: [{ tier: "mbl", pricePerGbMicroUsdc: "4000000" }] },
    });
    expect(body.countries).toContain("us");
    expect(parsePaymentRequired(body).success).toBe(true);
    const v2 = new x402HTTPClient(new x402Client()).getPaymentRequiredResponse(
      (n) => res.headers.get(n),
      body,
    );
    expect(parsePaymentRequired(v2).error?.issues ?? []).toEqual([]);
    expect(v2).toMatchObject({
      x402Version: 2,
      accepts: [{ network: CAIP2.base, amount: PRICE.toString() }],
    });
  });

  it("a bad order is a 400 that names the field", async () => {
    await stockUs(db);
    for (const [query, field] of [
      ["tier=gold&country=us&traffic=1", "tier"],
      ["tier=mbl&country=zz&traffic=1", "country"],
      ["tier=mbl&country=us&traffic=0.05", "traffic"],
      ["tier=mbl&country=us&traffic=1e3", "traffic"],
      ["tier=mbl&country=us&traffic=1&duration=91", "duration"],
      ["tier=mbl&country=us&traffic=1&sid=no", "sid"],
    ] as const) {
      const { res, body } = await call(`/v1/x402/pool?${query}`);
      expect(res.status, query).toBe(400);
      expect(body.error.details.issues[0].path, query).toBe(field);
    }
  });

  it("the agent flow: 402, pay USDC, retry with the hash, get a credential whose credit shows the cap", async () => {
    const agent = await payer();
    const quote = await call(ORDER);
    expect(quote.res.status).toBe(402);
    const hash = await transfer(agent, BigInt(quote.body.accepts[0].maxAmountRequired));
    const { res, body } = await buy(ORDER, { "Payment-Signature": hash });
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      product: { type: "pool", tier: "mbl", country: "us", allocatedGB: 0.5 },
      proxy: {
        host: "127.0.0.1",
        httpPort: x402.gatewayHttpPort,
        socksPort: 7001,
        username: `psx_${houseName}-mbl-us`,
      },
      credit: { tier: "mbl", allocatedGB: 0.5, usedGB: 0, remainingGB: 0.5, enabled: true },
      payment: { network: "base", txRef: hash, consumptionKey: `base:${hash}`, status: "minted" },
    });
    expect(body.proxy.password).toMatch(/^pak_[0-9a-f]{64}$/);
    expect(body.sessionToken).toMatch(/^x402s_[0-9a-f]{64}$/);
    expect(body.caveats.join(" ")).toMatch(/not the exit IP/);
    const payment = decodeBase64Json(res.headers.get("payment-response") ?? "");
    expect(payment).toMatchObject({ success: true, transaction: hash, network: CAIP2.base });

    const credit = await call("/v1/x402/manage/pool/credit", { "X-Session-Token": body.sessionToken });
    expect(credit.body).toMatchObject({
      credit: { allocatedBytes: 500_000_000, remainingBytes: 500_000_000 },
    });
    // The gateway's view: the Redis mirror holds the key with its cap.
    const { rows } = await db.query<{ credential_id: string }>(
      "SELECT credential_id FROM x402_payments WHERE consumption_key = $1",
      [`base:${hash}`],
    );
    const mirror = await redis.hgetall(keys.credential(rows[0]!.credential_id));
    expect(mirror).toMatchObject({ capBytes: "500000000", tier: "mbl", enabled: "1" });

    // Re-emission: the session token returns the very same password; the bare hash never does.
    const again = await call("/v1/x402/manage/pool/connection", { "X-Session-Token": body.sessionToken });
    expect(again.body.proxy.password).toBe(body.proxy.password);
    const bare = await buy(ORDER, { "Payment-Signature": hash });
    expect(bare.res.status).toBe(409);
    expect(bare.body.error.code).toBe("E_PAYMENT_USED");
    const withToken = await buy(ORDER, { "Payment-Signature": hash, "X-Session-Token": body.sessionToken });
    expect(withToken.body).toMatchObject({
      proxy: { password: body.proxy.password },
      payment: { status: "reemitted" },
    });

    const usage = await call("/v1/x402/manage/pool/usage?days=3", { "X-Session-Token": body.sessionToken });
    expect(usage.body.days).toHaveLength(3);
  });

  it("a payment binding signed by the payer re-emits the credential with a fresh password; a stranger's does not", async () => {
    const agent = await payer();
    const quote = await call(ORDER);
    const resource = quote.body.accepts[0].resource as string;
    const hash = await transfer(agent, PRICE);
    const first = await buy(ORDER, { "Payment-Signature": hash });
    expect(first.res.status).toBe(200);

    const bound = (signer: PrivateKeyAccount) => boundPaymentHeader(signer, { resource, txRef: hash });
    const stranger = await buy(ORDER, {
      "PAYMENT-SIGNATURE": await bound(privateKeyToAccount(generatePrivateKey())),
    });
    expect(stranger.res.status).toBe(402);
    expect(stranger.body.error.details.reason).toBe("binding_wrong_signer");
    const owner = await buy(ORDER, { "PAYMENT-SIGNATURE": await bound(agent) });
    expect(owner.res.status, JSON.stringify(owner.body)).toBe(200);
    expect(owner.body.payment.status).toBe("reemitted");
    expect(owner.body.proxy.username).toBe(first.body.proxy.username);
    expect(owner.body.proxy.password).not.toBe(first.body.proxy.password);
    expect(owner.body.sessionToken).not.toBe(first.body.sessionToken);
    const old = await call("/v1/x402/manage/pool/credit", { "X-Session-Token": first.body.sessionToken });
    expect(old.res.status).toBe(401);
  });

  it("an x402 exact EIP-3009 authorization is settled by the server, verified, and mints once; the header alone never re-emits", async () => {
    const agent = await payer();
    const quote = await call(ORDER);
    const header = await signedEip3009Header(agent, {
      usdc: chain.usdc,
      payTo: chain.payTo.address,
      price: PRICE,
      resource: quote.body.accepts[0].resource,
    });
    const { res, body } = await buy(ORDER, { "PAYMENT-SIGNATURE": header });
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.payment).toMatchObject({ network: "base", payer: agent.address, status: "minted" });
    // The header is public once settled (docs/adr/0008): a retry needs the session token.
    const retry = await buy(ORDER, { "PAYMENT-SIGNATURE": header });
    expect(retry.res.status, JSON.stringify(retry.body)).toBe(409);
    expect(retry.body.error.code).toBe("E_PAYMENT_USED");
    const withToken = await buy(ORDER, { "PAYMENT-SIGNATURE": header, "X-Session-Token": body.sessionToken });
    expect(withToken.res.status, JSON.stringify(withToken.body)).toBe(200);
    expect(withToken.body.payment).toMatchObject({ txRef: body.payment.txRef, status: "reemitted" });
    expect(withToken.body.proxy.password).toBe(body.proxy.password);
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE payer = $1", [agent.address]);
    expect(rows).toHaveLength(1);
  });

  it("refusals each say why: wrong recipient, fake token, underpaid beyond 2%, reverted, wrong network", async () => {
    const agent = await payer();
    const cases: [string, Promise<Hex>][] = [
      ["wrong_recipient", transfer(agent, PRICE, { to: privateKeyToAccount(generatePrivateKey()).address })],
    ];
    await chain.mint(agent.address, PRICE, chain.fakeUsdc);
    const results: [string, Hex][] = [];
    results.push(["wrong_recipient", await cases[0]![1]]);
    results.push(["no_usdc_transfer", await transfer(agent, PRICE, { token: chain.fakeUsdc })]);
    results.push(["underpaid", await transfer(agent, (PRICE * 97n) / 100n)]);
    const broke = await payer(0n);
    results.push(["reverted", await transfer(broke, PRICE, { gas: 100_000n })]);
    for (const [reason, hash] of results) {
      const { res, body } = await buy(ORDER, { "Payment-Signature": hash });
      expect(res.status, reason).toBe(402);
      expect(body.error).toMatchObject({ code: "E_PAYMENT_INVALID", details: { reason } });
    }
    // Paying 98% is within the tolerance.
    const within = await buy(ORDER, { "Payment-Signature": await transfer(agent, (PRICE * 98n) / 100n) });
    expect(within.res.status).toBe(200);
    // An authorization for another chain is refused before anything is settled.
    const wrongChain = encodeBase64Json({
      x402Version: 1,
      scheme: "exact",
      network: "ethereum",
      payload: {
        signature: `0x${"11".repeat(65)}`,
        authorization: {
          from: agent.address,
          to: chain.payTo.address,
          value: "1",
          validAfter: "0",
          validBefore: "9999999999",
          nonce: `0x${"22".repeat(32)}`,
        },
      },
    });
    const wc = await buy(ORDER, { "X-PAYMENT": wrongChain });
    expect(wc.res.status).toBe(400);
    expect(wc.body.error.message).toMatch(/not ethereum/);
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE payer = ANY($1)", [[broke.address]]);
    expect(rows).toHaveLength(0);
  });

  it("a pending transaction consumes nothing and says retry; once mined the same hash buys", async () => {
    const agent = await payer();
    await chain.testClient.setAutomine(false);
    let hash: Hex;
    try {
      hash = await transfer(agent, PRICE, { wait: false, gas: 100_000n });
      const { res, body } = await buy(ORDER, { "Payment-Signature": hash });
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("3");
      expect(body.error).toMatchObject({
        code: "E_PAYMENT_PENDING",
        details: { reason: "pending", retryable: true },
      });
      const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE consumption_key = $1", [
        `base:${hash}`,
      ]);
      expect(rows).toHaveLength(0);
      await chain.testClient.mine({ blocks: 1 });
    } finally {
      await chain.testClient.setAutomine(true);
    }
    const paid = await buy(ORDER, { "Payment-Signature": hash });
    expect(paid.res.status).toBe(200);
  });

  it("a hash used for one product is refused for another with 409", async () => {
    const agent = await payer();
    const hash = await transfer(agent, PRICE);
    expect((await buy(ORDER, { "Payment-Signature": hash })).res.status).toBe(200);
    const other = await buy("/v1/x402/pool?tier=mbl&country=us&traffic=0.25", { "Payment-Signature": hash });
    expect(other.res.status).toBe(409);
    expect(other.body.error.message).toMatch(/different product/);
  });

  it("100 concurrent redemptions of one hash mint exactly one credential; the others are told used or retry", async () => {
    const agent = await payer();
    const hash = await transfer(agent, PRICE);
    await stockUs(db);
    expect((await call(ORDER)).res.status).toBe(402); // the agent reads the 402 first, as it must
    const started = Date.now();
    const codes = await Promise.all(
      Array.from({ length: 100 }, () =>
        call(ORDER, { "Payment-Signature": hash }).then((r) =>
          r.res.status === 200 ? "200" : r.body.error.code,
        ),
      ),
    );
    const ms = Date.now() - started;
    const counts: Record<string, number> = {};
    for (const code of codes) counts[code] = (counts[code] ?? 0) + 1;
    console.log(`100 concurrent redemptions of one hash: ${JSON.stringify(counts)} in ${ms} ms`);
    expect(counts["200"]).toBe(1);
    expect((counts.E_PAYMENT_USED ?? 0) + (counts.E_PAYMENT_PENDING ?? 0)).toBe(99);
    const { rows } = await db.query(
      "SELECT c.id FROM credentials c JOIN x402_payments p ON p.credential_id = c.id WHERE p.consumption_key = $1",
      [`base:${hash}`],
    );
    expect(rows).toHaveLength(1);
    const { rows: all } = await db.query("SELECT 1 FROM credentials WHERE account_id = $1 AND name LIKE $2", [
      houseAccountId,
      `%${hash.slice(0, 18)}`,
    ]);
    expect(all).toHaveLength(1);
    expect((await call(ORDER, { "Payment-Signature": hash })).res.status).toBe(409);
  });

  it("without the Redis guard, 20 concurrent redeems of one payment in Postgres mint exactly one (the UNIQUE key decides)", async () => {
    const txRef = toHex(crypto.getRandomValues(new Uint8Array(32)));
    const payment = {
      network: "base" as const,
      txRef,
      payer: chain.agent.address,
      amount: PRICE,
      payerProven: false,
      authorizationKey: null,
    };
    const order = {
      tier: { name: "mbl", pricePerGbMicro: 4_000_000n, description: "" },
      country: "us",
      quote: { trafficBytes: 500_000_000n, trafficGb: "0.5", priceMicro: PRICE, durationDays: 30 },
      sid: undefined,
      rot: undefined,
    };
    // One pool per caller, like one Worker request each.
    const pools = Array.from({ length: 20 }, () => createPool(e.DATABASE_URL, e.NEON_WS_PROXY));
    try {
      const results = await Promise.all(
        pools.map((pool) =>
          redeemPoolPurchase(
            { pool, redis, now: () => new Date() },
            { houseAccountId, payment, order, priceMicro: PRICE, sessionToken: undefined },
          ).then((r) => r.kind),
        ),
      );
      expect(results.filter((k) => k === "minted")).toHaveLength(1);
      expect(results.filter((k) => k === "needs_proof")).toHaveLength(19);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
    const { rows } = await db.query("SELECT credential_id FROM x402_payments WHERE consumption_key = $1", [
      `base:${txRef}`,
    ]);
    expect(rows).toHaveLength(1);
  });

  it("topup quotes with 402, re-enables a key suspended at its cap, applies each tx once; regenerate is 3 per hour", async () => {
    const agent = await payer();
    const bought = await buy(ORDER, { "Payment-Signature": await transfer(agent, PRICE) });
    const token = { "X-Session-Token": bought.body.sessionToken as string };
    // The gateway used the whole cap and suspended the key (what its Lua and the usage cron record).
    const { rows } = await db.query<{ credential_id: string }>(
      "SELECT credential_id FROM x402_payments WHERE payer = $1",
      [agent.address],
    );
    const keyId = rows[0]!.credential_id;
    await redis.set(keys.credentialUsed(keyId), "500000000");
    await db.query("UPDATE credentials SET enabled = false, suspended_reason = 'cap' WHERE id = $1", [keyId]);
    const suspended = await call("/v1/x402/manage/pool/credit", token);
    expect(suspended.body.credit).toMatchObject({
      enabled: false,
      suspendedReason: "cap",
      remainingBytes: 0,
    });
    const quote = await call("/v1/x402/manage/pool/topup?traffic=0.25", token, "POST");
    expect(quote.res.status).toBe(402);
    expect(quote.body.accepts[0].maxAmountRequired).toBe("1000000");
    const hash = await transfer(agent, 1_000_000n);
    const topped = await call(
      "/v1/x402/manage/pool/topup?traffic=0.25",
      { ...token, "Payment-Signature": hash },
      "POST",
    );
    expect(topped.res.status, JSON.stringify(topped.body)).toBe(200);
    expect(topped.body).toMatchObject({
      credit: {
        allocatedGB: 0.75,
        usedGB: 0.5,
        remainingBytes: 250_000_000,
        enabled: true,
        suspendedReason: null,
      },
      payment: { status: "applied" },
    });
    expect(await redis.hgetall(keys.credential(keyId))).toMatchObject({
      enabled: "1",
      capBytes: "750000000",
    });
    const twice = await call(
      "/v1/x402/manage/pool/topup?traffic=0.25",
      { ...token, "Payment-Signature": hash },
      "POST",
    );
    expect(twice.body).toMatchObject({
      credit: { allocatedGB: 0.75 },
      payment: { status: "already_applied" },
    });
    const asPurchase = await buy("/v1/x402/pool?tier=mbl&country=us&traffic=0.25", {
      "Payment-Signature": hash,
    });
    expect(asPurchase.res.status).toBe(409);

    const passwords = new Set([bought.body.proxy.password]);
    for (let i = 0; i < 3; i++) {
      const r = await call("/v1/x402/manage/pool/regenerate", token, "POST");
      expect(r.res.status).toBe(200);
      expect(r.body.proxy.username).toBe(bought.body.proxy.username);
      passwords.add(r.body.proxy.password);
    }
    expect(passwords.size).toBe(4);
    const fourth = await call("/v1/x402/manage/pool/regenerate", token, "POST");
    expect(fourth.res.status).toBe(429);
    const conn = await call("/v1/x402/manage/pool/connection", token);
    expect([...passwords].at(-1)).toBe(conn.body.proxy.password);
  });

  /** An unmodified x402 client's paying fetch buys 0.1 GB: a fresh credential paid by `agent`. */
  async function expectBuys(pay: (url: string) => Promise<Response>, agent: PrivateKeyAccount) {
    await stockUs(db);
    const res = await pay(`${api.url}/v1/x402/pool?tier=mbl&country=us&traffic=0.1`);
    const body = (await res.json()) as Json;
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      credit: { allocatedGB: 0.1 },
      payment: { payer: agent.address, status: "minted" },
    });
  }

  it("unmodified @x402/fetch buys a credential from the running API", async () => {
    const agent = await payer(10_000_000n);
    const client = new x402Client().register(CAIP2.base, new ExactEvmScheme(agent));
    await expectBuys(wrapFetchWithPayment(fetch, client), agent);
  });

  it("unmodified x402-fetch (x402 v1, X-PAYMENT) buys a credential from the running API", async () => {
    const agent = await payer(10_000_000n);
    const wallet = createWalletClient({ account: agent, chain: chain.chain, transport: http(chain.rpcUrl) });
    await expectBuys(wrapFetchV1(fetch, wallet as Parameters<typeof wrapFetchV1>[1], 1_000_000n), agent);
  });

  it("discovery documents are served for agents", async () => {
    const skill = await fetch(`${api.url}/skill.md`);
    expect(skill.headers.get("content-type")).toMatch(/markdown/);
    expect(await skill.text()).toMatch(/Payment-Signature/);
    expect((await fetch(`${api.url}/llms.txt`)).status).toBe(200);
    const wk = (await (await fetch(`${api.url}/.well-known/x402.json`)).json()) as Json;
    expect(wk.networks[0]).toMatchObject({ network: "base", payTo: chain.payTo.address });
    const pricing = (await (await fetch(`${api.url}/v1/x402/pool/pricing`)).json()) as Json;
    expect(pricing).toMatchObject({
      purchasable: true,
      traffic: { minimumGB: "0.1" },
      duration: { default: 30, max: 90 },
    });
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as Json;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(["/v1/x402/pool", "/v1/x402/manage/pool/topup"]),
    );
  });
});
