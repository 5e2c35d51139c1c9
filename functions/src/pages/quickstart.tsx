/**
 * GET /pool-quickstart: for a person evaluating the agent path: the live 402 this API answers for a
 * sample order right now, the username DSL, and copy-paste lines for curl and an @x402/fetch agent.
 */
import { Layout } from "./layout.tsx";

export interface LiveQuote {
  url: string;
  status: number;
  /** The response body, pretty-printed JSON (or the raw text). */
  body: string;
  /** The x402 v2 PAYMENT-REQUIRED header decoded from base64, pretty-printed; null when absent. */
  paymentRequired: string | null;
}

export function QuickstartPage(props: { origin: string; quote: LiveQuote }) {
  const q = props.quote;
  const agent = `import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { privateKeyToAccount } from "viem/accounts";

// The agent's wallet holds USDC on Base; nothing else is needed: no account, no API key.
const wallet = privateKeyToAccount(process.env.AGENT_KEY as \`0x\${string}\`);
const client = new x402Client().register("eip155:8453", new ExactEvmScheme(wallet));
const pay = wrapFetchWithPayment(fetch, client);

// 402 -> sign an EIP-3009 authorization -> retry with it -> 200 with the credential.
const res = await pay("${q.url}");
const access = await res.json();
console.log(access.proxy.http);        // http://psx_...:pak_...@host:7000
console.log(access.sessionToken);      // keep it: X-Session-Token for the manage routes`;
  return (
    <Layout title="Agent quickstart">
      <h1>Buy proxy access with nothing but a wallet</h1>
      <ol class="steps">
        <li>
          Ask for what you want. The answer is <code>402 Payment Required</code> with the price and where to
          pay (x402).
        </li>
        <li>Pay USDC on Base or Solana, or sign an EIP-3009 authorization that the API settles itself.</li>
        <li>
          Repeat the request with the payment. The answer is a metered proxy credential and a session token
          for top-ups and usage.
        </li>
      </ol>

      <h2>The live 402, right now</h2>
      <p>
        <code>GET {q.url}</code> answered <strong data-testid="quote-status">{q.status}</strong>:
      </p>
      <pre data-testid="quote-body">{q.body}</pre>
      {q.paymentRequired ? (
        <>
          <p>
            The x402 v2 <code>PAYMENT-REQUIRED</code> header, decoded:
          </p>
          <pre data-testid="quote-v2">{q.paymentRequired}</pre>
        </>
      ) : null}

      <h2>With curl</h2>
      <pre>{`curl -s -i "${q.url}"                       # the 402 above
curl -s "${props.origin}/v1/x402/pool/pricing"      # every tier, price per GB, networks
curl -s "${props.origin}/v1/gateway/pool/stock"     # what is routable, per pool and country`}</pre>

      <h2>With an @x402/fetch agent</h2>
      <pre data-testid="agent-snippet">{agent}</pre>

      <h2>The username DSL</h2>
      <p>
        The credential's username picks the exit per connection:{" "}
        <code>{"psx_<account>-<pool>-<country>[-<token>-<value>]..."}</code>
      </p>
      <table>
        <tbody>
          <tr>
            <th scope="row">pool</th>
            <td>
              <code>mbl</code> production modems, <code>peer</code> community devices, <code>any</code>
            </td>
          </tr>
          <tr>
            <th scope="row">country</th>
            <td>
              ISO-2 (<code>us</code>, <code>de</code>) or <code>any</code>
            </td>
          </tr>
          <tr>
            <th scope="row">sid</th>
            <td>8-64 of a-z, 0-9, _: a sticky session; without one every connection is a fresh pick</td>
          </tr>
          <tr>
            <th scope="row">rot</th>
            <td>
              <code>sticky</code>, <code>hard</code>, <code>auto5</code>/<code>auto10</code>/
              <code>auto20</code>/<code>auto60</code> (move every N minutes), <code>ondemand</code>
            </td>
          </tr>
          <tr>
            <th scope="row">iptype, carrier, city, ttl</th>
            <td>a hard filter on the exit's class; soft ranking hints; the session's life in seconds</td>
          </tr>
        </tbody>
      </table>
      <pre>{`curl -s -x "http://psx_ACCOUNT-peer-us-sid-agent01abc-rot-auto10:pak_SECRET@GATEWAY:7000" https://example.com/`}</pre>
      <p class="fine">
        Agents read the same in Markdown at <a href="/skill.md">/skill.md</a>; machines at{" "}
        <a href="/.well-known/x402.json">/.well-known/x402.json</a> and{" "}
        <a href="/openapi.json">/openapi.json</a>.
      </p>
    </Layout>
  );
}
