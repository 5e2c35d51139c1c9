import type { Address, Hex } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { devUsdcAbi, type EvmChain, startEvmChain } from "../../dev/chains/evm.ts";
import {
  authorizationKey,
  decodeEip3009Header,
  type Eip3009Payment,
  settleEip3009Payment,
} from "./eip3009.ts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS, BASE_USDC_EIP712 } from "./networks.ts";
import { encodeBase64Json } from "./quote.ts";
import { signedEip3009Header } from "./testing.ts";

const PRICE = 400_000n;

let chain: EvmChain;

beforeAll(async () => {
  chain = await startEvmChain();
});
afterAll(async () => {
  await chain?.stop();
});

const now = () => Math.floor(Date.now() / 1000);

/** A v2 header paying PRICE to the pinned recipient; `opts` forge what a refusal needs. */
const signedHeader = (
  signer: PrivateKeyAccount,
  opts: {
    to?: Address;
    value?: bigint;
    validBefore?: bigint;
    from?: Address;
    verifyingContract?: Address;
  } = {},
): Promise<string> =>
  signedEip3009Header(signer, {
    usdc: chain.usdc,
    payTo: chain.payTo.address,
    price: PRICE,
    resource: "http://127.0.0.1/v1/x402/pool?traffic=0.1",
    ...opts,
  });

function decoded(header: string): Eip3009Payment {
  const result = decodeEip3009Header(header);
  if (!result.ok) throw new Error(result.message);
  return result.payment;
}

function settle(payment: Eip3009Payment) {
  return settleEip3009Payment({
    payment,
    usdc: BASE_USDC_ADDRESS,
    domain: BASE_USDC_EIP712,
    payTo: chain.payTo.address,
    price: PRICE,
    now: now(),
    publicClient: chain.publicClient,
    walletClient: chain.walletFor(chain.gasWallet),
    expectedChainId: BASE_CHAIN_ID,
    confirmations: 1,
  });
}

const balanceOf = (address: Address) =>
  chain.publicClient.readContract({
    address: chain.usdc,
    abi: devUsdcAbi,
    functionName: "balanceOf",
    args: [address],
  });

describe("EIP-3009 exact scheme: decode, check, settle from our gas wallet, verify on-chain", () => {
  it("a signed authorization is settled by the gas wallet and verifies like any transfer", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const recipientBefore = await balanceOf(chain.payTo.address);
    const payment = decoded(await signedHeader(agent));
    const result = await settle(payment);
    expect(result).toMatchObject({ ok: true, code: "ok", amount: PRICE, from: agent.address });
    expect(result.txHash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await balanceOf(chain.payTo.address)).toBe(recipientBefore + PRICE);
    expect(await balanceOf(agent.address)).toBe(10_000_000n - PRICE);
    expect(await balanceOf(chain.gasWallet.address)).toBe(0n); // it only paid gas
    const tx = await chain.publicClient.getTransaction({ hash: result.txHash! });
    expect(tx.from.toLowerCase()).toBe(chain.gasWallet.address.toLowerCase());
    expect(authorizationKey(payment)).toBe(
      `base:eip3009:${agent.address.toLowerCase()}:${payment.authorization.nonce.toLowerCase()}`,
    );
  });

  it("settling the same authorization again answers with the first settlement, paying once", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const payment = decoded(await signedHeader(agent));
    const first = await settle(payment);
    expect(first).toMatchObject({ ok: true });
    const again = await settle(payment);
    expect(again).toMatchObject({ ok: true, amount: PRICE, txHash: first.txHash, alreadySettled: true });
    expect(await balanceOf(agent.address)).toBe(10_000_000n - PRICE);
  });

  it("three concurrent settlements of one authorization all resolve to the single transfer", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const payment = decoded(await signedHeader(agent));
    const results = await Promise.all([settle(payment), settle(payment), settle(payment)]);
    expect(results.map((r) => r.code)).toEqual(["ok", "ok", "ok"]);
    expect(new Set(results.map((r) => r.txHash)).size).toBe(1);
    expect(await balanceOf(agent.address)).toBe(10_000_000n - PRICE);
  });

  it("an authorization to another recipient is refused before any gas is spent", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const stranger = await chain.newFundedAccount();
    const gasBefore = await chain.publicClient.getBalance({ address: chain.gasWallet.address });
    const result = await settle(decoded(await signedHeader(agent, { to: stranger.address })));
    expect(result).toMatchObject({ ok: false, code: "wrong_recipient" });
    expect(await chain.publicClient.getBalance({ address: chain.gasWallet.address })).toBe(gasBefore);
  });

  it("an authorization for less than the price minus 2% is refused as underpaid", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    expect(await settle(decoded(await signedHeader(agent, { value: 391_999n })))).toMatchObject({
      ok: false,
      code: "underpaid",
    });
  });

  it("an authorization signed by another key, or for another token's domain, has a bad signature", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const thief = await chain.newFundedAccount();
    const forged = decoded(await signedHeader(thief, { from: agent.address }));
    expect(await settle(forged)).toMatchObject({ ok: false, code: "authorization_bad_signature" });
    const otherDomain = decoded(await signedHeader(agent, { verifyingContract: chain.fakeUsdc }));
    expect(await settle(otherDomain)).toMatchObject({ ok: false, code: "authorization_bad_signature" });
    expect(await balanceOf(agent.address)).toBe(10_000_000n);
  });

  it("an expired authorization is refused as authorization_expired", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const payment = decoded(await signedHeader(agent, { validBefore: BigInt(now() - 1) }));
    expect(await settle(payment)).toMatchObject({ ok: false, code: "authorization_expired" });
  });

  it("an authorization the token rejects on simulation (signer lacks funds) is settlement_failed", async () => {
    const poor = await chain.newFundedAccount(0n);
    const payment = decoded(await signedHeader(poor));
    expect(await settle(payment)).toMatchObject({ ok: false, code: "settlement_failed" });
  });

  it("five authorizations settled concurrently from one gas wallet all land and verify", async () => {
    const agents = await Promise.all([1, 2, 3, 4, 5].map(() => chain.newFundedAccount(10_000_000n)));
    const payments = await Promise.all(agents.map(async (agent) => decoded(await signedHeader(agent))));
    const results = await Promise.all(payments.map((payment) => settle(payment)));
    expect(results.map((r) => r.code)).toEqual(["ok", "ok", "ok", "ok", "ok"]);
    expect(new Set(results.map((r) => r.txHash)).size).toBe(5);
  });

  it("headers that are not base64 JSON, or name another network, are refused when decoded", () => {
    expect(decodeEip3009Header("not base64!")).toMatchObject({ ok: false, code: "authorization_malformed" });
    const v1OtherNetwork = encodeBase64Json({
      x402Version: 1,
      scheme: "exact",
      network: "base-sepolia",
      payload: {
        signature: `0x${"11".repeat(65)}`,
        authorization: {
          from: chain.agent.address,
          to: chain.payTo.address,
          value: "1",
          validAfter: "0",
          validBefore: "1",
          nonce: `0x${"22".repeat(32)}` as Hex,
        },
      },
    });
    expect(decodeEip3009Header(v1OtherNetwork)).toMatchObject({
      ok: false,
      code: "authorization_wrong_network",
    });
  });
});
