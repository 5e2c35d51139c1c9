// Our 402 must be understood by the x402 clients agents actually run, unmodified. The purchase route
// is not built yet, so a stub fetch serves the price sheet our builders produce (the same bytes the
// route will send) and captures the paid retry; the EIP-3009 payment an unmodified @x402/fetch signs
// is then settled and verified on anvil by our own code.
import { x402HTTPClient } from "@x402/core/client";
import { parsePaymentRequired } from "@x402/core/schemas";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment as wrapFetchV2, x402Client } from "@x402/fetch";
import { createWalletClient, http } from "viem";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { wrapFetchWithPayment as wrapFetchV1 } from "x402-fetch";
import { type EvmChain, startEvmChain } from "../../dev/chains/evm.ts";
import { checkEip3009Authorization, decodeEip3009Header, settleEip3009Payment } from "./eip3009.ts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS, BASE_USDC_EIP712, SOLANA_USDC_MINT } from "./networks.ts";
import {
  buildPaymentRequiredV1,
  buildPaymentRequiredV2,
  encodePaymentRequiredHeader,
  type PriceSheetInput,
  quotePurchase,
} from "./quote.ts";

const RESOURCE = "http://127.0.0.1:8787/v1/x402/pool?tier=mbl&country=us&traffic=0.1";

let chain: EvmChain;

beforeAll(async () => {
  chain = await startEvmChain();
});
afterAll(async () => {
  await chain?.stop();
});

function priceSheet(): PriceSheetInput {
  const quoted = quotePurchase({ pricePerGbMicro: 4_000_000n, traffic: "0.1" });
  if (!quoted.ok) throw new Error(quoted.message);
  return {
    resource: RESOURCE,
    description: "0.1 GB of mbl pool traffic for 30 days",
    priceMicro: quoted.quote.priceMicro,
    options: [
      {
        network: "base",
        payTo: chain.payTo.address,
        asset: BASE_USDC_ADDRESS,
        extra: { ...BASE_USDC_EIP712 },
      },
      { network: "solana", payTo: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", asset: SOLANA_USDC_MINT },
    ],
  };
}

/** A stand-in for the not-yet-built route: answers 402 like it will, then records the paid retry. */
function stubRoute() {
  const retries: Headers[] = [];
  const fetchStub = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    // Clients pass either (url, init) or a Request carrying the headers.
    const { headers } = new Request(input, init);
    if (headers.has("PAYMENT-SIGNATURE") || headers.has("X-PAYMENT")) {
      retries.push(headers);
      return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
    }
    const sheet = priceSheet();
    return new Response(JSON.stringify(buildPaymentRequiredV1(sheet)), {
      status: 402,
      headers: {
        "content-type": "application/json",
        "cache-control": "no-store",
        "PAYMENT-REQUIRED": encodePaymentRequiredHeader(buildPaymentRequiredV2(sheet)),
      },
    });
  };
  return { fetchStub: fetchStub as typeof fetch, retries };
}

describe("x402 client compatibility of our 402", () => {
  it("@x402/core parses the v1 body and the v2 PAYMENT-REQUIRED header without error", async () => {
    const { fetchStub } = stubRoute();
    const response = await fetchStub(RESOURCE);
    const body = await response.json();
    expect(parsePaymentRequired(body).success).toBe(true);
    const fromHeader = new x402HTTPClient(new x402Client()).getPaymentRequiredResponse(
      (name) => response.headers.get(name),
      body,
    );
    const parsed = parsePaymentRequired(fromHeader);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(fromHeader).toMatchObject({
      x402Version: 2,
      accepts: [{ network: "eip155:8453", amount: "400000" }, {}],
    });
  });

  it("unmodified x402-fetch (v1) parses our 402 and signs an authorization our checker accepts", async () => {
    const { fetchStub, retries } = stubRoute();
    // Loopback transport: signing is local, and any stray RPC call could only reach 127.0.0.1.
    const wallet = createWalletClient({
      account: chain.agent,
      chain: chain.chain,
      transport: http(chain.rpcUrl),
    });
    const pay = wrapFetchV1(fetchStub, wallet as Parameters<typeof wrapFetchV1>[1], 1_000_000n);
    expect((await pay(RESOURCE)).status).toBe(200);
    const header = retries[0]?.get("X-PAYMENT");
    expect(header).toBeTruthy();
    const decoded = decodeEip3009Header(header!);
    if (!decoded.ok) throw new Error(decoded.message);
    expect(decoded.payment).toMatchObject({ x402Version: 1, authorization: { value: 400_000n } });
    const check = await checkEip3009Authorization({
      payment: decoded.payment,
      usdc: BASE_USDC_ADDRESS,
      domain: BASE_USDC_EIP712,
      payTo: chain.payTo.address,
      price: 400_000n,
      now: Math.floor(Date.now() / 1000),
    });
    expect(check).toEqual({ ok: true });
  });

  it("unmodified @x402/fetch (v2) pays our 402 with EIP-3009, which we settle and verify on anvil", async () => {
    const { fetchStub, retries } = stubRoute();
    const agent = await chain.newFundedAccount(10_000_000n);
    const client = new x402Client().register("eip155:8453", new ExactEvmScheme(agent));
    const pay = wrapFetchV2(fetchStub, client);
    expect((await pay(RESOURCE)).status).toBe(200);
    const header = retries[0]?.get("PAYMENT-SIGNATURE");
    expect(header).toBeTruthy();
    const decoded = decodeEip3009Header(header!);
    if (!decoded.ok) throw new Error(decoded.message);
    const settled = await settleEip3009Payment({
      payment: decoded.payment,
      usdc: BASE_USDC_ADDRESS,
      domain: BASE_USDC_EIP712,
      payTo: chain.payTo.address,
      price: 400_000n,
      now: Math.floor(Date.now() / 1000),
      publicClient: chain.publicClient,
      walletClient: chain.walletFor(chain.gasWallet),
      expectedChainId: BASE_CHAIN_ID,
      confirmations: 1,
    });
    expect(settled).toMatchObject({ ok: true, code: "ok", amount: 400_000n, from: agent.address });
  });
});
