/** Discovery for agents: /skill.md, /llms.txt, /.well-known/x402.json and /v1/x402/.well-known. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { CAIP2 } from "../../../../shared/x402/networks.ts";
import type { Config } from "../../config.ts";
import type { AppEnv } from "../../env.ts";
import { poolCaveats } from "../../services/x402-caveats.ts";
import { railsFromConfig } from "../../services/x402-config.ts";
import { paymentOptions } from "../../services/x402-pricing.ts";
import { originOf } from "./answers.ts";
import { TAG } from "./schemas.ts";

function skillMd(origin: string, config: Config): string {
  const gatewayHost = config.GATEWAY_PUBLIC_HOST;
  const httpPort = config.GATEWAY_HTTP_PORT;
  const socksPort = config.GATEWAY_SOCKS_PORT;
  const bareOff = config.X402_BARE_HASH === "off";
  return `# Buying proxy access from this network (for AI agents)

You can buy metered access to a pool of production mobile modems with USDC, without an account,
or rent one dedicated modem for whole days (see "Or rent a dedicated modem" below).
Two HTTP requests and one on-chain transfer. Everything below is machine-checkable.

## 1. Read the price sheet
GET ${origin}/v1/x402/pool/pricing
Tiers (price per GB in integer micro-USDC: 1 USDC = 1000000), minimum 0.1 GB, duration in days
(default 30, max 90, no charge), payment networks with the recipient (payTo) and the USDC asset,
the countries with live stock, and the username format.

## 2. Ask for your order; the 402 answer is the invoice
GET ${origin}/v1/x402/pool?tier=mbl&country=us&traffic=0.5
Optional: duration=<days>, sid=<8-64 of a-z0-9_> (needed for sticky routing), rot=<mode>.
The answer is HTTP 402 with \`accepts[]\`: per network the exact amount (\`maxAmountRequired\`,
micro-USDC), \`asset\`, \`payTo\` and \`resource\`. The same object in x402 v2 form is in the
\`PAYMENT-REQUIRED\` header (base64 JSON). A 400 names the parameter you must fix.

## 3. Pay, then repeat the request with proof
Simplest and safest: a standard x402 \`exact\` EIP-3009 payment (what x402 client libraries such as
@x402/fetch send): you sign a USDC TransferWithAuthorization, we submit it from our gas wallet and
verify the transfer. Keep the \`sessionToken\` of the answer: re-sending the same payment header
never gives the credential again (the header is public once settled), and a copy of it is refused.
If the settlement is not final within ~20 s you get 503 E_PAYMENT_PENDING with
\`details.sessionToken\`: repeat the same request with the same header and
\`X-Session-Token: <details.sessionToken>\`; nobody without that token can complete it.

Or pay yourself on one network:
- Base (chain 8453, CAIP-2 ${CAIP2.base}): transfer USDC (the \`asset\` contract) to payTo.
- Solana: transfer USDC (mint in accepts) to payTo's token account.
Then repeat the exact same request with
- \`PAYMENT-SIGNATURE: <base64 JSON>\` = \`{"x402Version":2,"accepted":{"scheme":"exact","network":"eip155:8453"},
  "payload":{"txRef":"<tx>","binding":{"nonce":"<8-128 chars>","expiry":<unix s, <= 15 min ahead>,"signature":"<sig>"}}}\`
  where the paying wallet signed {resource, txRef, nonce, expiry} (EIP-712 domain
  "peerproxy x402 payment binding" v1 on Base; the text form with signMessage on Solana)${
    bareOff
      ? `.
- Bare transaction hashes are refused here (400 naming Payment-Signature): a mined hash is public,
  and anyone watching payTo could present it before you.`
      : `, or
- \`Payment-Signature: <Base tx hash | Solana signature>\` (bare: accepted here, but anyone watching
  payTo can present a mined hash before you do; production deployments refuse it by default).`
  }
If the transfer is not final yet you get 503 E_PAYMENT_PENDING: nothing was used, retry the same
request in a few seconds. Underpaying by more than 2% is refused (402 E_PAYMENT_INVALID).

## 4. Use the answer
The 200 answer holds \`proxy\` (host ${gatewayHost}, HTTP port ${httpPort}, SOCKS5 port ${socksPort},
username, password, ready-made URLs), \`credit\`, \`sessionToken\` and \`manage\` URLs.
curl -x "http://USERNAME:PASSWORD@${gatewayHost}:${httpPort}" https://example.com/
Username format: psx_<account>-mbl-<country>[-sid-<id>][-rot-<mode>]. Change the country or sid
per request by editing the username; the password stays the same. rot: sticky, hard, auto5,
auto10, auto20, auto60, ondemand. An unknown or malformed token is an error, never ignored.

## 5. Manage with your session token (store it: it is the only recovery handle)
Header \`X-Session-Token: x402s_...\`
- GET ${origin}/v1/x402/manage/pool/credit: remaining GB
- GET ${origin}/v1/x402/manage/pool/usage?days=7: bytes per day
- POST ${origin}/v1/x402/manage/pool/topup?traffic=1: 402 quote, then pay the same way (re-enables a key stopped at its cap)
- POST ${origin}/v1/x402/manage/pool/regenerate: new password, same username (3 per hour)
- GET ${origin}/v1/x402/manage/pool/connection: the credentials again

## Or rent a dedicated modem (the whole device, for whole days)
GET ${origin}/v1/x402/proxy/pricing: price per day (micro-USDC), traffic included per day, duration
limits, and how many modems are free per country (counts only).
GET ${origin}/v1/x402/proxy?country=us&duration=7 (optional carrier=<name>): the 402 invoice, paid
and retried exactly as above. If no modem is free you get 503 E_NO_FREE_MODEM instead of a 402;
if the last one is taken between your 402 and your paid retry, the same 503 says your payment was
NOT consumed: present the same proof again later.
The 200 answer has \`proxy\` (same gateway and ports), \`expiresAt\`, \`rotationUrl\` and
\`sessionToken\`. The key routes only to your modem, whatever the username says; nobody else is
routed to that modem until expiresAt.
Header \`X-Session-Token\`:
- POST ${origin}/v1/x402/manage/proxy/rotate: the modem re-dials for a new carrier IP (202 with a
  rotationId; 501 E_ROTATION_UNAVAILABLE when its operator configured no rotation; 1 per minute)
- GET ${origin}/v1/x402/manage/proxy/status: reservation, traffic left, last rotation
- GET .../usage?days=7, GET .../connection, POST .../regenerate, POST .../topup?traffic=1 as for pool access

## Limits and honest caveats
${poolCaveats(config)
  .map((c) => `- ${c}`)
  .join("\n")}
- Rate limits: paid attempts (purchases and topups alike) ${config.X402_RATE_LIMIT_PURCHASE_PER_MINUTE}/min per IP; topup 5/min and regenerate 3/hour per session.
- Sessions end with what they bought (expiresAt): an expired X-Session-Token is refused (401).
- One payment buys one thing: a tx presented for a different order is refused (409 E_PAYMENT_USED).
- Live stock (counts only, never addresses): ${origin}/v1/gateway/pool/stock
- Full API description: ${origin}/openapi.json
`;
}

function llmsTxt(origin: string): string {
  return `# peerproxy

> An open peer proxy network. AI agents buy metered, capped proxy credentials with USDC over HTTP 402
> (x402): no account, no API key. Production mobile modems, sold per GB.

## Start here
- [Agent guide](${origin}/skill.md): how to discover the price, pay, retry with proof, and use the credential
- [Price sheet](${origin}/v1/x402/pool/pricing): tiers, minimum, networks, recipient, asset, username format
- [Dedicated modem price sheet](${origin}/v1/x402/proxy/pricing): price per day, included GB, free modems per country
- [x402 discovery](${origin}/.well-known/x402.json): payable resources in machine-readable form
- [OpenAPI](${origin}/openapi.json): every route with its request and response schema

## Key facts
- Price is in integer micro-USDC; underpayment tolerance is 2%.
- Pay with a standard x402 EIP-3009 authorization (Base, chain 8453; we settle it), or pay USDC on Base or
  Solana and repeat the request with a payment header bound by the paying wallet's signature.
- A payment header never re-emits a credential (it is public once settled): keep the sessionToken.
- Keep the sessionToken (x402s_...): credit, usage, topup, regenerate and re-emission need it.
- Sticky routing pins the device, not the IP, and needs a sid.
- Live stock: ${origin}/v1/gateway/pool/stock (counts only)
- Dedicated modem: GET ${origin}/v1/x402/proxy?country=us&duration=7 (402, pay, retry); rotate its IP with
  POST ${origin}/v1/x402/manage/proxy/rotate (X-Session-Token). A payment that finds no free modem is not consumed.
`;
}

function wellKnown(c: Context<AppEnv>) {
  const origin = originOf(c);
  const built = railsFromConfig(c.get("deps").config);
  return {
    x402Version: 1,
    name: "peerproxy pool access and dedicated modems",
    description:
      "Metered proxy credentials on production mobile modems, paid per GB in USDC; or one dedicated modem, paid per day",
    docs: { agents: `${origin}/skill.md`, llms: `${origin}/llms.txt`, openapi: `${origin}/openapi.json` },
    resources: [
      {
        resource: `${origin}/v1/x402/pool`,
        methods: ["GET", "POST"],
        query: {
          tier: "mbl",
          country: "ISO-2 or any",
          traffic: "GB, >= 0.1",
          duration: "days 1-90",
          sid: "optional",
          rot: "optional",
        },
        pricing: `${origin}/v1/x402/pool/pricing`,
        paymentHeaders: ["Payment-Signature", "PAYMENT-SIGNATURE", "X-PAYMENT"],
      },
      {
        resource: `${origin}/v1/x402/manage/pool/topup`,
        methods: ["POST"],
        query: { traffic: "GB, >= 0.1" },
        auth: "X-Session-Token",
      },
      {
        resource: `${origin}/v1/x402/proxy`,
        methods: ["GET", "POST"],
        description: "a dedicated production modem for whole days, with a rotation URL",
        query: { country: "ISO-2 or any", duration: "days", carrier: "optional" },
        pricing: `${origin}/v1/x402/proxy/pricing`,
        paymentHeaders: ["Payment-Signature", "PAYMENT-SIGNATURE", "X-PAYMENT"],
      },
      {
        resource: `${origin}/v1/x402/manage/proxy/topup`,
        methods: ["POST"],
        query: { traffic: "GB, >= 0.1" },
        auth: "X-Session-Token",
      },
    ],
    networks: built.ok
      ? paymentOptions(built.rails).map((o) => ({
          network: o.network,
          caip2: CAIP2[o.network],
          payTo: o.payTo,
          asset: o.asset,
        }))
      : [],
  };
}

const WellKnown = z
  .object({
    x402Version: z.number(),
    name: z.string(),
    description: z.string(),
    docs: z.record(z.string(), z.string()),
    resources: z.array(z.record(z.string(), z.unknown())),
    networks: z.array(z.record(z.string(), z.string())),
  })
  .openapi("X402WellKnown");

const wellKnownRoute = createRoute({
  method: "get",
  path: "/v1/x402/.well-known",
  summary: "Machine-readable list of what can be bought here and how",
  tags: [TAG],
  responses: {
    200: { description: "Discovery document", content: { "application/json": { schema: WellKnown } } },
  },
});

export function registerX402Discovery(app: OpenAPIHono<AppEnv>) {
  app.openapi(wellKnownRoute, (c) => c.json(wellKnown(c), 200));
  app.get("/.well-known/x402.json", (c) => c.json(wellKnown(c)));
  app.get("/skill.md", (c) => {
    const { config } = c.get("deps");
    c.header("Content-Type", "text/markdown; charset=utf-8");
    return c.body(skillMd(originOf(c), config));
  });
  app.get("/llms.txt", (c) => {
    c.header("Content-Type", "text/plain; charset=utf-8");
    return c.body(llmsTxt(originOf(c)));
  });
}
