// The Solana rail end to end: the real API under wrangler dev verifying real SPL Token transfers
// executed by litesvm behind a small JSON-RPC endpoint (test/chains/solana-rpc.ts).
import {
  type Address,
  generateKeyPairSigner,
  getBase58Decoder,
  type KeyPairSigner,
  signBytes,
} from "@solana/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool } from "../shared/db/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { solanaBindingText } from "../shared/x402/binding.ts";
import { CAIP2 } from "../shared/x402/networks.ts";
import { encodeBase64Json } from "../shared/x402/quote.ts";
import { sendSplTransfer } from "./chains/solana-client.ts";
import { type SolanaTestRpc, startSolanaTestRpc } from "./chains/solana-rpc.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import { createHouseAccount, deleteAccount, deletePurchases, stockUs } from "./helpers/x402.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = tcpRedis(e.REDIS_URL);
let chain: SolanaTestRpc;
let api: Api;
let payTo: KeyPairSigner;
let payToUsdc: Address;
let houseAccountId: string;
const ORDER = "/v1/x402/pool?tier=mbl&country=any&traffic=0.1";
const PRICE = 400_000n;

beforeAll(async () => {
  chain = await startSolanaTestRpc();
  payTo = await generateKeyPairSigner();
  payToUsdc = await chain.setTokenBalance(payTo.address, chain.usdcMint, 0n);
  houseAccountId = await createHouseAccount(db, `x402sol_${Date.now()}`);
  await stockUs(db);
  api = await startApi(
    {
      ...stateVars(e),
      X402_SOLANA_RPC_URL: chain.url,
      X402_SOLANA_PAY_TO: payTo.address,
      X402_HOUSE_ACCOUNT_ID: houseAccountId,
      // The per-IP window lives in the run's shared Redis; other files' purchases come from 127.0.0.1 too.
      X402_RATE_LIMIT_PURCHASE_PER_MINUTE: "1000",
    },
    { tmp: e.PEERPROXY_TEST_TMP },
  );
}, 90_000);

afterAll(async () => {
  await api?.stop();
  await chain?.close();
  await deletePurchases(db, redis, houseAccountId);
  await deleteAccount(db, houseAccountId);
  await db.end();
  await redis.close();
});

// biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
type Json = Record<string, any>;
async function call(path: string, headers: Record<string, string> = {}) {
  await stockUs(db);
  const res = await fetch(`${api.url}${path}`, { headers });
  return { res, body: (await res.json()) as Json };
}

async function payingAgent() {
  const agent = await generateKeyPairSigner();
  chain.airdrop(agent.address, 1_000_000_000n);
  const source = await chain.setTokenBalance(agent.address, chain.usdcMint, 10_000_000n);
  const pay = (amount: bigint) =>
    sendSplTransfer({
      rpcUrl: chain.url,
      payer: agent,
      mint: chain.usdcMint,
      source,
      destination: payToUsdc,
      amount,
    });
  return { agent, pay };
}

describe("x402 pool purchase on Solana (litesvm)", () => {
  it("402 offers Solana USDC; a confirmed SPL transfer buys a credential; processed-only answers pending", async () => {
    const quote = await call(ORDER);
    expect(quote.res.status).toBe(402);
    expect(quote.body.accepts).toEqual([
      expect.objectContaining({
        network: "solana",
        payTo: payTo.address,
        asset: chain.usdcMint,
        maxAmountRequired: "400000",
      }),
    ]);
    const { agent, pay } = await payingAgent();
    const signature = await pay(PRICE);
    chain.setConfirmation(signature, "processed");
    const pending = await call(ORDER, { "Payment-Signature": signature });
    expect(pending.res.status).toBe(503);
    expect(pending.body.error.code).toBe("E_PAYMENT_PENDING");
    chain.setConfirmation(signature, "confirmed");
    const { res, body } = await call(ORDER, { "Payment-Signature": signature });
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      credit: { allocatedGB: 0.1, enabled: true },
      payment: { network: "solana", txRef: signature, payer: agent.address, status: "minted" },
    });
    const credit = await call("/v1/x402/manage/pool/credit", { "X-Session-Token": body.sessionToken });
    expect(credit.body.credit.remainingBytes).toBe(100_000_000);
  });

  it("a signMessage binding by the paying wallet re-emits; the bare signature alone does not", async () => {
    const quote = await call(ORDER);
    const resource = quote.body.accepts[0].resource as string;
    const { agent, pay } = await payingAgent();
    const signature = await pay(PRICE);
    expect((await call(ORDER, { "Payment-Signature": signature })).res.status).toBe(200);
    expect((await call(ORDER, { "Payment-Signature": signature })).res.status).toBe(409);
    const message = {
      resource,
      txRef: signature,
      nonce: `sol-${Date.now()}`,
      expiry: Math.floor(Date.now() / 1000) + 300,
    };
    const signed = await signBytes(
      agent.keyPair.privateKey,
      new TextEncoder().encode(solanaBindingText(message)),
    );
    const header = encodeBase64Json({
      x402Version: 2,
      accepted: { scheme: "exact", network: CAIP2.solana },
      payload: {
        txRef: signature,
        binding: {
          nonce: message.nonce,
          expiry: message.expiry,
          signature: getBase58Decoder().decode(signed),
        },
      },
    });
    const again = await call(ORDER, { "PAYMENT-SIGNATURE": header });
    expect(again.res.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.payment.status).toBe("reemitted");
  });

  it("an underpaid Solana transfer is refused as underpaid", async () => {
    const { pay } = await payingAgent();
    const { res, body } = await call(ORDER, { "Payment-Signature": await pay((PRICE * 97n) / 100n) });
    expect(res.status).toBe(402);
    expect(body.error.details.reason).toBe("underpaid");
  });
});
