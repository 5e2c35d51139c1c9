// The x402 money boundary under attack (issue 9): each test performs what an outsider can do
// against the real API under wrangler dev (workerd), this run's Postgres and Redis and a local
// anvil chain, and asserts the safe outcome. Two API processes share one gas wallet, as isolates do
// in production.
import { mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import {
  decodeFunctionData,
  encodeFunctionData,
  type Hex,
  keccak256,
  type PrivateKeyAccount,
  parseSignature,
  serializeSignature,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type EvmChain, startEvmChain } from "../dev/chains/evm.ts";
import { type StateEnv, type StateServices, startStateServices } from "../dev/services.ts";
import { configSchema } from "../functions/src/config.ts";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { testGatewayEnv } from "../gateway-node/testing.ts";
import { createPool } from "../shared/db/pool.ts";
import { hashSecret, randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { credWrite } from "../shared/lua/scripts.gen.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { eip3009Abi } from "../shared/x402/eip3009.ts";
import { BASE_USDC_EIP712, CAIP2 } from "../shared/x402/networks.ts";
import { encodeBase64Json } from "../shared/x402/quote.ts";
import { boundPaymentHeader, signedEip3009Header } from "../shared/x402/testing.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import {
  baseRailVars,
  createHouseAccount,
  deleteAccount,
  deleteGasWallet,
  deletePurchases,
  fundedGasKey,
  newPayer,
  stockUs,
  transferUsdc,
} from "./helpers/x402.ts";

const tmp = stateEnv().PEERPROXY_TEST_TMP;
// Its own Redis and Postgres: the purchases need stock in pool_rollup, which the cron of any other
// file's API on the run's database rewrites from that file's devices (DELETE, then INSERT).
let services: StateServices;
let e: StateEnv & { PEERPROXY_TEST_TMP: string };
let db: ReturnType<typeof createPool>;
let redis: ReturnType<typeof tcpRedis>;

let chain: EvmChain;
/** Its Redis goes through `redisFaults`, which can fail the credential mirror write on demand. */
let apiA: Api;
/** A second API process with the same gas wallet: another isolate. */
let apiB: Api;
let gasKey: Hex;
let gasAddress: Hex;
let houseAccountId: string;
const payers: string[] = [];
const PURCHASE_LIMIT = 4;
const BYTE_LEASE = 131_072;
const HOLD_LEASE_MS = 20_000;

/** A loopback hop in front of the Upstash REST stand-in that fails credential mirror writes while `failMirror`. */
let redisFaults: Server;
let failMirror = false;

function startRedisFaults(upstream: string): Promise<Server> {
  const isMirrorWrite = (command: unknown) => {
    if (!Array.isArray(command)) return false;
    const verb = String(command[0] ?? "").toLowerCase();
    return (
      (verb === "evalsha" && command[1] === credWrite.sha) ||
      (verb === "eval" && command[1] === credWrite.source)
    );
  };
  const injected = { error: "ERR injected: Redis unavailable for the mirror write" };
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    let body = Buffer.concat(chunks);
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {}
    const pipelined = req.url?.startsWith("/pipeline") && Array.isArray(parsed);
    // The client auto-pipelines: fail only the mirror writes inside a pipeline, forward the rest.
    let failedAt: number[] = [];
    if (failMirror && pipelined) {
      const commands = parsed as unknown[];
      failedAt = commands.flatMap((c, i) => (isMirrorWrite(c) ? [i] : []));
      if (failedAt.length === commands.length) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(commands.map(() => injected)));
        return;
      }
      body = Buffer.from(JSON.stringify(commands.filter((_, i) => !failedAt.includes(i))));
    } else if (failMirror && isMirrorWrite(parsed)) {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify(injected));
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      if (typeof v === "string" && k !== "host" && k !== "content-length") headers[k] = v;
    const upstreamRes = await fetch(`${upstream}${req.url}`, {
      method: req.method ?? "POST",
      headers,
      ...(body.length ? { body } : {}),
    });
    let out = Buffer.from(await upstreamRes.arrayBuffer());
    if (failedAt.length) {
      const results = JSON.parse(out.toString("utf8")) as unknown[];
      for (const i of failedAt) results.splice(i, 0, injected);
      out = Buffer.from(JSON.stringify(results));
    }
    res.writeHead(upstreamRes.status, { "content-type": upstreamRes.headers.get("content-type") ?? "" });
    res.end(out);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

beforeAll(async () => {
  [chain, services] = await Promise.all([
    startEvmChain(),
    startStateServices({ dir: mkdtempSync(join(tmp, "x402-attacks-state-")) }),
  ]);
  e = { ...services.env, PEERPROXY_TEST_TMP: tmp };
  db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
  redis = tcpRedis(e.REDIS_URL);
  houseAccountId = await createHouseAccount(db, `x402atk_${Math.random().toString(36).slice(2, 8)}`);
  gasKey = await fundedGasKey(chain);
  gasAddress = privateKeyToAccount(gasKey).address;
  await stockUs(db);
  redisFaults = await startRedisFaults(e.UPSTASH_REDIS_REST_URL);
  const vars = {
    ...stateVars(e),
    ...baseRailVars(chain, houseAccountId),
    X402_GAS_WALLET_KEY: gasKey,
    X402_BARE_HASH: "off",
    X402_RATE_LIMIT_PURCHASE_PER_MINUTE: String(PURCHASE_LIMIT),
    GATEWAY_PUBLIC_HOST: "127.0.0.1",
    GATEWAY_BYTE_LEASE: String(BYTE_LEASE),
    GATEWAY_HOLD_LEASE_MS: String(HOLD_LEASE_MS),
  };
  // One at a time: two wrangler dev processes starting together collide on a local socket.
  apiA = await startApi(
    { ...vars, UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${(redisFaults.address() as AddressInfo).port}` },
    { tmp: e.PEERPROXY_TEST_TMP },
  );
  apiB = await startApi(vars, { tmp: e.PEERPROXY_TEST_TMP });
  // Both open for purchases (their readiness check caches a failed probe for a few seconds).
  for (const api of [apiA, apiB])
    await waitFor(
      async () => {
        const res = await fetch(`${api.url}/v1/x402/pool/pricing`);
        return ((await res.json()) as { purchasable: boolean }).purchasable ? true : undefined;
      },
      30_000,
      `${api.url} purchasable`,
    );
}, 120_000);

afterAll(async () => {
  await Promise.all([apiA?.stop(), apiB?.stop()]);
  await chain?.stop();
  redisFaults?.close();
  if (houseAccountId) {
    await deletePurchases(db, redis, houseAccountId, payers);
    await deleteGasWallet(db, gasKey);
    await deleteAccount(db, houseAccountId);
  }
  await db?.end();
  await redis?.close();
  await services?.stop();
});

afterEach((ctx) => {
  // What the API said, when a test fails: the Worker's own log is the first thing to read.
  if (ctx.task.result?.state === "fail")
    for (const api of [apiA, apiB]) console.log(`--- ${api?.url}\n${api?.service.output().slice(-3000)}`);
});

// biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
type Json = Record<string, any>;

/** A fresh documentation-range client IP, so the per-IP purchase limit only bites where a test wants it. */
const freshIp = () => `198.18.${Math.floor(Math.random() * 250) + 1}.${Math.floor(Math.random() * 250) + 1}`;

async function call(
  api: Api,
  path: string,
  headers: Record<string, string> = {},
  init: { method?: string; body?: string } = {},
) {
  const res = await fetch(`${api.url}${path}`, {
    method: init.method ?? "GET",
    headers: { "CF-Connecting-IP": freshIp(), ...headers },
    ...(init.body !== undefined ? { body: init.body } : {}),
  });
  const text = await res.text();
  let body: Json;
  try {
    body = JSON.parse(text) as Json;
  } catch {
    body = { text };
  }
  return { res, body };
}

const payer = (usdc?: bigint) => newPayer(chain, payers, usdc);
const ORDER = "/v1/x402/pool?tier=mbl&country=us&traffic=0.1";
const PRICE = 400_000n; // 0.1 GB at $4/GB
const OTHER_ORDER = "/v1/x402/pool?tier=mbl&country=us&traffic=0.1&duration=7";

async function resourceOf(api: Api, order: string): Promise<string> {
  await stockUs(db);
  const quote = await call(api, order);
  expect(quote.res.status, JSON.stringify(quote.body)).toBe(402);
  return quote.body.accepts[0].resource as string;
}

async function eip3009For(agent: PrivateKeyAccount, api: Api, order = ORDER, price = PRICE) {
  return signedEip3009Header(agent, {
    usdc: chain.usdc,
    payTo: chain.payTo.address,
    price,
    resource: await resourceOf(api, order),
  });
}

/** Transactions the gas wallet has sent, pending included. */
const gasNonce = (blockTag: "pending" | "latest" = "pending") =>
  chain.publicClient.getTransactionCount({ address: gasAddress, blockTag });

/**
 * What anyone can do after our gas wallet settled an authorization: read the calldata of the
 * settlement transaction and rebuild the x402 v2 `exact` header the payer sent.
 */
async function headerFromCalldata(txHash: Hex): Promise<string> {
  const tx = await chain.publicClient.getTransaction({ hash: txHash });
  const { args } = decodeFunctionData({ abi: eip3009Abi, data: tx.input });
  const [from, to, value, validAfter, validBefore, nonce, v, r, s] = args as readonly [
    Hex,
    Hex,
    bigint,
    bigint,
    bigint,
    Hex,
    number,
    Hex,
    Hex,
  ];
  return encodeBase64Json({
    x402Version: 2,
    accepted: {
      scheme: "exact",
      network: CAIP2.base,
      amount: value.toString(),
      asset: chain.usdc,
      payTo: to,
      maxTimeoutSeconds: 600,
      extra: BASE_USDC_EIP712,
    },
    payload: {
      signature: serializeSignature({ r, s, v: BigInt(v) }),
      authorization: {
        from,
        to,
        value: value.toString(),
        validAfter: validAfter.toString(),
        validBefore: validBefore.toString(),
        nonce,
      },
    },
  });
}

async function withManualMining<T>(run: () => Promise<T>, intervalSeconds = 0): Promise<T> {
  await chain.testClient.setAutomine(false);
  if (intervalSeconds) await chain.testClient.setIntervalMining({ interval: intervalSeconds });
  try {
    return await run();
  } finally {
    if (intervalSeconds) await chain.testClient.setIntervalMining({ interval: 0 });
    await chain.testClient.setAutomine(true);
    await chain.testClient.mine({ blocks: 1 });
  }
}

async function waitFor<T>(probe: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("x402 money boundary (issue 9)", () => {
  it("1. a stranger replaying the EIP-3009 header an unmodified @x402/fetch agent paid with gets no credential, no rotation, no re-emission; the payer keeps access", async () => {
    const agent = await payer(10_000_000n);
    const sent: string[] = [];
    const ip = freshIp();
    const recording = async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
      const req = new Request(input, init);
      req.headers.set("cf-connecting-ip", ip);
      const header = req.headers.get("payment-signature");
      if (header) sent.push(header);
      return fetch(req);
    };
    const pay = wrapFetchWithPayment(
      recording as typeof fetch,
      new x402Client().register(CAIP2.base, new ExactEvmScheme(agent)),
    );
    await stockUs(db);
    const res = await pay(`${apiA.url}${ORDER}`);
    const bought = (await res.json()) as Json;
    expect(res.status, JSON.stringify(bought)).toBe(200);
    expect(sent).toHaveLength(1);
    const token = bought.sessionToken as string;
    const password = bought.proxy.password as string;

    // The stranger rebuilds the header from our settlement's calldata (it equals what the agent sent).
    const rebuilt = await headerFromCalldata(bought.payment.txRef);
    for (const [api, order, header] of [
      [apiA, ORDER, sent[0]!],
      [apiB, ORDER, rebuilt],
      [apiA, OTHER_ORDER, rebuilt],
      [apiB, "/v1/x402/manage/pool/topup?traffic=0.1", rebuilt],
    ] as const) {
      await stockUs(db);
      const method = order.includes("topup") ? "POST" : "GET";
      const headers: Record<string, string> = { "PAYMENT-SIGNATURE": header };
      if (method === "POST") {
        // The stranger's own cheapest session, to try the authorization as a topup.
        headers["X-Session-Token"] = (await buyWithEip3009(apiB)).sessionToken;
      }
      const replay = await call(api, order, headers, { method });
      expect(replay.res.status, `${order}: ${JSON.stringify(replay.body)}`).toBe(409);
      expect(replay.body.error.code).toBe("E_PAYMENT_USED");
      expect(JSON.stringify(replay.body)).not.toMatch(/pak_|x402s_/);
    }

    const credit = await call(apiA, "/v1/x402/manage/pool/credit", { "X-Session-Token": token });
    expect(credit.res.status).toBe(200);
    const conn = await call(apiB, "/v1/x402/manage/pool/connection", { "X-Session-Token": token });
    expect(conn.body.proxy.password).toBe(password);
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE payer = $1", [agent.address]);
    expect(rows).toHaveLength(1);

    // The payer itself, having lost everything, recovers with a binding it signs over the settled tx.
    const resource = await resourceOf(apiA, ORDER);
    const recovered = await call(apiA, ORDER, {
      "PAYMENT-SIGNATURE": await boundPaymentHeader(agent, { resource, txRef: bought.payment.txRef }),
    });
    expect(recovered.res.status, JSON.stringify(recovered.body)).toBe(200);
    expect(recovered.body.payment.status).toBe("reemitted");
    expect(recovered.body.proxy.username).toBe(bought.proxy.username);
  });

  it("1b/5. while the first redemption waits, the same authorization for another order or from another isolate is refused; the timeout answer advises the session token, never the bare hash; the first buyer gets what it paid for", async () => {
    const agent = await payer(10_000_000n);
    const header = await eip3009For(agent, apiA);
    const before = await gasNonce();
    await withManualMining(async () => {
      const first = call(apiA, ORDER, { "PAYMENT-SIGNATURE": header });
      await waitFor(async () => ((await gasNonce()) > before ? true : undefined), 30_000, "the broadcast");
      for (const [api, order] of [
        [apiB, OTHER_ORDER],
        [apiA, OTHER_ORDER],
        [apiB, ORDER],
      ] as const) {
        await stockUs(db);
        const other = await call(api, order, { "PAYMENT-SIGNATURE": header });
        expect(other.res.status, `${order}: ${JSON.stringify(other.body)}`).toBe(409);
        expect(JSON.stringify(other.body)).not.toMatch(/pak_|x402s_/);
      }
      // Nothing mined: the first request gives up waiting and says how to resume.
      const pending = await first;
      expect(pending.res.status, JSON.stringify(pending.body)).toBe(503);
      expect(pending.body.error.code).toBe("E_PAYMENT_PENDING");
      expect(pending.body.error.message).not.toMatch(/retry with that hash|bare/i);
      expect(pending.body.error.message).toMatch(/X-Session-Token/);
      const resumeToken = pending.body.error.details.sessionToken as string;
      expect(resumeToken).toMatch(/^x402s_/);
      expect(await gasNonce()).toBe(before + 1);
      await chain.testClient.mine({ blocks: 1 });
      const resumed = await call(apiB, ORDER, {
        "PAYMENT-SIGNATURE": header,
        "X-Session-Token": resumeToken,
      });
      expect(resumed.res.status, JSON.stringify(resumed.body)).toBe(200);
      expect(resumed.body.payment.status).toBe("minted");
      expect(resumed.body.sessionToken).toBe(resumeToken);
    });
    expect(await gasNonce("latest")).toBe(before + 1);
  }, 90_000);

  async function buyWithEip3009(api: Api, order = ORDER, price = PRICE): Promise<Json> {
    const agent = await payer(10_000_000n);
    const header = await eip3009For(agent, api, order, price);
    await stockUs(db);
    const { res, body } = await call(api, order, { "PAYMENT-SIGNATURE": header });
    expect(res.status, JSON.stringify(body)).toBe(200);
    return body;
  }

  it("2. a topup with a victim's bare tx hash is refused under X402_BARE_HASH=off, and topups count against the per-IP purchase limit", async () => {
    const session = await buyWithEip3009(apiA);
    const victim = await payer(10_000_000n);
    const victimHash = await transferUsdc(chain, victim, PRICE);
    const stolen = await call(
      apiA,
      "/v1/x402/manage/pool/topup?traffic=0.1",
      { "X-Session-Token": session.sessionToken, "Payment-Signature": victimHash },
      { method: "POST" },
    );
    expect(stolen.res.status, JSON.stringify(stolen.body)).toBe(400);
    expect(stolen.body.error.details.issues[0].path).toBe("Payment-Signature");
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE tx_ref = $1", [victimHash]);
    expect(rows).toHaveLength(0);
    // The victim's own proof, bound by its wallet (what the demo agent sends), still buys here.
    const own = await call(apiA, ORDER, {
      "PAYMENT-SIGNATURE": await boundPaymentHeader(victim, {
        resource: await resourceOf(apiA, ORDER),
        txRef: victimHash,
      }),
    });
    expect(own.res.status, JSON.stringify(own.body)).toBe(200);
    expect(own.body.payment).toMatchObject({ txRef: victimHash, status: "minted" });

    const ip = freshIp();
    const statuses: number[] = [];
    for (let i = 0; i < PURCHASE_LIMIT; i++) {
      const r = await call(
        apiA,
        "/v1/x402/manage/pool/topup?traffic=0.1",
        {
          "X-Session-Token": session.sessionToken,
          "Payment-Signature": `0x${"ab".repeat(32)}`,
          "CF-Connecting-IP": ip,
        },
        { method: "POST" },
      );
      statuses.push(r.res.status);
    }
    await stockUs(db);
    const purchase = await call(apiA, ORDER, {
      "Payment-Signature": `0x${"ab".repeat(32)}`,
      "CF-Connecting-IP": ip,
    });
    statuses.push(purchase.res.status);
    expect(statuses).toEqual([...Array(PURCHASE_LIMIT).fill(400), 429]);
  });

  it("3. concurrent copies of one header on two API processes (interval mining) cause one broadcast; distinct authorizations share the gas wallet's nonces across processes", async () => {
    const agent = await payer(10_000_000n);
    const header = await eip3009For(agent, apiA);
    const before = await gasNonce("latest");
    const distinct = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const other = await payer(1_000_000n);
        return eip3009For(other, apiA);
      }),
    );
    const started = Date.now();
    const { copies, each } = await withManualMining(async () => {
      await stockUs(db);
      const copies = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          call(i % 2 ? apiB : apiA, ORDER, { "PAYMENT-SIGNATURE": header }).then((r) =>
            r.res.status === 200 ? "200" : String(r.body.error?.code),
          ),
        ),
      );
      const each = await Promise.all(
        distinct.map((h, i) =>
          call(i % 2 ? apiB : apiA, ORDER, { "PAYMENT-SIGNATURE": h }).then((r) =>
            r.res.status === 200 ? "200" : `${r.res.status} ${JSON.stringify(r.body.error)}`,
          ),
        ),
      );
      return { copies, each };
    }, 1);
    console.log(
      `8 copies of one header on 2 processes: ${JSON.stringify(copies)}; 6 distinct authorizations: ${JSON.stringify(each)} in ${Date.now() - started} ms`,
    );
    expect(copies.filter((c) => c === "200")).toHaveLength(1);
    expect(copies.filter((c) => c !== "200").every((c) => c === "E_PAYMENT_USED")).toBe(true);
    expect(each).toEqual(Array(6).fill("200"));
    // One settlement for the copies, one per distinct authorization: no reverting broadcasts.
    expect(await gasNonce("latest")).toBe(before + 7);
  }, 90_000);

  /**
   * A request that claimed `header`'s authorization, recorded its signed settlement and died:
   * after sending it (`sent`) or before (`recorded`). Returns the recorded hash and the owner token.
   */
  async function crashedClaim(header: string, agent: PrivateKeyAccount, sent: boolean) {
    const decoded = JSON.parse(Buffer.from(header, "base64").toString("utf8")) as Json;
    const a = decoded.payload.authorization;
    const gas = chain.walletFor(privateKeyToAccount(gasKey));
    const { r, s, v, yParity } = parseSignature(decoded.payload.signature);
    const nonce = await gasNonce();
    const data = encodeFunctionData({
      abi: eip3009Abi,
      functionName: "transferWithAuthorization",
      args: [
        a.from,
        a.to,
        BigInt(a.value),
        BigInt(a.validAfter),
        BigInt(a.validBefore),
        a.nonce,
        Number(v ?? BigInt(yParity + 27)),
        r,
        s,
      ],
    });
    const raw = await gas.signTransaction(
      await gas.prepareTransactionRequest({ to: chain.usdc, data, nonce }),
    );
    const txHash = keccak256(raw);
    if (sent) {
      await chain.publicClient.sendRawTransaction({ serializedTransaction: raw });
      await chain.publicClient.waitForTransactionReceipt({ hash: txHash });
    }
    const token = `x402s_${randomHex(32)}`;
    await db.query(
      `INSERT INTO x402_authorization_claims (authorization_key, payer, product_key, resource, price_micro,
                                              token_hash, state, gas_wallet, tx_nonce, tx_hash, raw_tx)
       VALUES ($1, $2, 'pool:mbl:us:100000000:30', $3, $4, $5, 'broadcast', $6, $7, $8, $9)`,
      [
        `base:eip3009:${String(a.from).toLowerCase()}:${String(a.nonce).toLowerCase()}`,
        agent.address,
        await resourceOf(apiA, ORDER),
        PRICE.toString(),
        await hashSecret(token),
        gasAddress.toLowerCase(),
        nonce,
        txHash,
        sent ? null : raw,
      ],
    );
    return { txHash, token };
  }

  it("3b. a settlement recorded before a crash is reconciled on retry: the recorded transaction is found (or re-sent as recorded), nothing is signed again", async () => {
    for (const sent of [true, false]) {
      const agent = await payer(10_000_000n);
      const header = await eip3009For(agent, apiA);
      const before = await gasNonce();
      const { txHash, token } = await crashedClaim(header, agent, sent);
      await stockUs(db);
      // A stranger's copy is refused; the owner's retry completes it.
      expect((await call(apiA, ORDER, { "PAYMENT-SIGNATURE": header })).res.status).toBe(409);
      const retry = await call(apiB, ORDER, { "PAYMENT-SIGNATURE": header, "X-Session-Token": token });
      expect(retry.res.status, `sent=${sent}: ${JSON.stringify(retry.body)}`).toBe(200);
      expect(retry.body.payment).toMatchObject({ txRef: txHash, status: "minted" });
      expect(retry.body.sessionToken).toBe(token);
      // Exactly the one recorded transaction went out from the gas wallet.
      expect(await gasNonce()).toBe(before + 1);
    }
  });

  it("4. a Redis failure on the mirror write after the payment committed still answers 200 with the access; the next read repairs the mirror", async () => {
    const agent = await payer(10_000_000n);
    const header = await eip3009For(agent, apiA);
    failMirror = true;
    let bought: Awaited<ReturnType<typeof call>>;
    try {
      await stockUs(db);
      bought = await call(apiA, ORDER, { "PAYMENT-SIGNATURE": header });
    } finally {
      failMirror = false;
    }
    expect(bought.res.status, JSON.stringify(bought.body)).toBe(200);
    expect(bought.body.proxy.password).toMatch(/^pak_/);
    const { rows } = await db.query<{ credential_id: string }>(
      "SELECT credential_id FROM x402_payments WHERE payer = $1",
      [agent.address],
    );
    const keyId = rows[0]!.credential_id;
    expect(await redis.hgetall(keys.credential(keyId))).toEqual({});
    const credit = await call(apiA, "/v1/x402/manage/pool/credit", {
      "X-Session-Token": bought.body.sessionToken,
    });
    expect(credit.res.status).toBe(200);
    expect(await redis.hgetall(keys.credential(keyId))).toMatchObject({
      capBytes: "100000000",
      enabled: "1",
    });
  });

  it("5. an expired session is refused naming its expiry; the bare-hash policy is stated in the 402 and /skill.md and is off by default in production", async () => {
    const bought = await buyWithEip3009(apiA);
    const token = { "X-Session-Token": bought.sessionToken as string };
    expect((await call(apiA, "/v1/x402/manage/pool/credit", token)).res.status).toBe(200);
    await db.query(
      "UPDATE x402_sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
      [await hashSecret(bought.sessionToken)],
    );
    for (const [path, method] of [
      ["/v1/x402/manage/pool/credit", "GET"],
      ["/v1/x402/manage/pool/connection", "GET"],
      ["/v1/x402/manage/pool/topup?traffic=0.1", "POST"],
      ["/v1/x402/manage/pool/regenerate", "POST"],
    ] as const) {
      const r = await call(apiA, path, token, { method });
      expect(r.res.status, path).toBe(401);
      expect(r.body.error.message, path).toMatch(/expired/);
    }

    await stockUs(db);
    const quote = await call(apiA, ORDER);
    expect(quote.body.paymentPolicy).toMatchObject({ bareHash: "off" });
    expect(quote.body.error).toMatch(/bare/);
    const skill = await (await fetch(`${apiA.url}/skill.md`)).text();
    expect(skill).toMatch(/bare transaction hashes are refused here/i);

    const base = {
      DATABASE_URL: "postgres://x@127.0.0.1/x",
      UPSTASH_REDIS_REST_URL: "https://example.upstash.io",
      UPSTASH_REDIS_REST_TOKEN: "t",
      JWT_SECRET: "x".repeat(32),
    };
    expect(configSchema.parse({ ...base, ENVIRONMENT: "production" }).X402_BARE_HASH).toBe("off");
    expect(configSchema.parse({ ...base, ENVIRONMENT: "development" }).X402_BARE_HASH).toBe("on");
  });

  it("6. caveats state the configured byte lease and hold lease in purchase answers, /v1/x402/pool/pricing and /skill.md", async () => {
    const bought = await buyWithEip3009(apiA);
    const pricing = (await call(apiA, "/v1/x402/pool/pricing")).body;
    const skill = await (await fetch(`${apiA.url}/skill.md`)).text();
    const proxyPricing = (await call(apiA, "/v1/x402/proxy/pricing")).body;
    for (const text of [
      bought.caveats.join("\n"),
      pricing.caveats.join("\n"),
      proxyPricing.caveats.join("\n"),
      skill,
    ]) {
      expect(text).toMatch(/128 KiB/);
      expect(text).toMatch(/20 s/);
      expect(text).not.toMatch(/5-35/);
    }
    // Unset, the API quotes the gateway's own defaults.
    const gateway = loadGatewayConfig(testGatewayEnv());
    const api = configSchema.parse({
      DATABASE_URL: "postgres://x@127.0.0.1/x",
      UPSTASH_REDIS_REST_URL: "https://example.upstash.io",
      UPSTASH_REDIS_REST_TOKEN: "t",
      JWT_SECRET: "x".repeat(32),
    });
    expect([api.GATEWAY_BYTE_LEASE, api.GATEWAY_BYTE_LEASE_MAX, api.GATEWAY_HOLD_LEASE_MS]).toEqual([
      gateway.GATEWAY_BYTE_LEASE,
      gateway.GATEWAY_BYTE_LEASE_MAX,
      gateway.GATEWAY_HOLD_LEASE_MS,
    ]);
  });

  it("7. bad bodies on money routes are 400s naming the body, never 500", async () => {
    const session = await buyWithEip3009(apiA);
    const token = { "X-Session-Token": session.sessionToken as string };
    const routes: [string, Record<string, string>][] = [
      [ORDER, {}],
      ["/v1/x402/proxy?country=any&duration=1", {}],
      ["/v1/x402/manage/pool/topup?traffic=0.1", token],
      ["/v1/x402/manage/pool/regenerate", token],
      ["/v1/x402/manage/proxy/topup?traffic=0.1", token],
    ];
    for (const [path, headers] of routes) {
      for (const body of ["\u0000", "{", '{"a":1'] as const) {
        await stockUs(db);
        const r = await call(
          apiA,
          path,
          { ...headers, "Content-Type": "application/json" },
          { method: "POST", body },
        );
        expect(r.res.status, `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`).toBe(400);
        expect(r.body.error.message, path).toMatch(/body/);
      }
    }
  });
});
