// `npm run demo:agent`: plays an AI agent that holds nothing but a wallet, against the running local
// stack (`npm start`): GET the 402 price sheet -> pay USDC on the local Base chain -> repeat the
// request with the tx hash bound to the paying wallet -> receive a credential -> fetch through the
// gateway with it -> read the credit and see the bytes counted. Exits non-zero if any step fails.
// Dev only: it reads the run's generated agent key from .local/stack.json.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Address, createWalletClient, defineChain, type Hex, http, parseAbi, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { bindingTypedData } from "../shared/x402/binding.ts";
import { CAIP2 } from "../shared/x402/networks.ts";
import { encodeBase64Json } from "../shared/x402/quote.ts";

const run = promisify(execFile);
const stackFile = join(process.env.STACK_DIR ?? join(import.meta.dirname, "..", ".local"), "stack.json");
// biome-ignore lint/suspicious/noExplicitAny: the demo walks JSON documents it prints
type Json = Record<string, any>;

function loadStack(): Json {
  try {
    return JSON.parse(readFileSync(stackFile, "utf8")) as Json;
  } catch {
    console.error(`demo:agent: ${stackFile} not found: start the local network first with \`npm start\``);
    process.exit(2);
  }
}

const step = (n: number, text: string) => console.log(`[${n}] ${text}`);

async function main() {
  const stack = loadStack();
  const api: string = stack.api.url;
  const order = `${api}/v1/x402/pool?tier=mbl&country=us&traffic=0.1`;

  // 1. The price sheet: an unpaid request is answered 402 with what to pay, where.
  const quote = await fetch(order);
  const sheet = (await quote.json()) as Json;
  if (quote.status !== 402) throw new Error(`expected 402, got ${quote.status}: ${JSON.stringify(sheet)}`);
  const offer = (sheet.accepts as Json[]).find((a) => a.network === "base");
  if (!offer) throw new Error(`no Base offer in ${JSON.stringify(sheet.accepts)}`);
  const amount = BigInt(offer.maxAmountRequired);
  step(1, `402: ${offer.description}: ${amount} micro-USDC to ${offer.payTo}`);

  // 2. Pay: a plain USDC transfer from the agent's wallet on the local chain.
  const chain = defineChain({
    id: stack.chain.chainId,
    name: "Base (local anvil)",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [stack.chain.rpcUrl] } },
  });
  const agent = privateKeyToAccount(stack.chain.agent.privateKey as Hex);
  const wallet = createWalletClient({ chain, transport: http(stack.chain.rpcUrl), account: agent }).extend(
    publicActions,
  );
  const hash = await wallet.writeContract({
    address: offer.asset as Address,
    abi: parseAbi(["function transfer(address to, uint256 value) returns (bool)"]),
    functionName: "transfer",
    args: [offer.payTo as Address, amount],
  });
  const receipt = await wallet.waitForTransactionReceipt({ hash });
  step(2, `paid: tx ${hash} (block ${receipt.blockNumber}, ${receipt.status})`);

  // 3. Retry with proof. The hash alone is public once mined, so the agent also signs
  // {resource, txRef, nonce, expiry} with the paying wallet (x402 v2 header; see docs/adr/0002).
  const binding = {
    resource: offer.resource as string,
    txRef: hash,
    nonce: `demo-${Date.now().toString(36)}`,
    expiry: Math.floor(Date.now() / 1000) + 300,
  };
  const signature = await agent.signTypedData(bindingTypedData(binding, chain.id));
  const proof = encodeBase64Json({
    x402Version: 2,
    accepted: { scheme: "exact", network: CAIP2.base },
    payload: { txRef: hash, binding: { nonce: binding.nonce, expiry: binding.expiry, signature } },
  });
  const paid = await fetch(order, { headers: { "PAYMENT-SIGNATURE": proof } });
  const bought = (await paid.json()) as Json;
  if (paid.status !== 200) throw new Error(`purchase refused (${paid.status}): ${JSON.stringify(bought)}`);
  const { proxy, sessionToken } = bought as { proxy: Json; sessionToken: string };
  step(3, `credential: ${proxy.username} (cap ${bought.credit?.allocatedBytes ?? "?"} bytes)`);

  // 4. Use it like any customer: curl through the gateway (pool mbl -> the local modem) to the
  // HTTPS target. The username routes; the credential's tier keeps it on mbl whatever it asks.
  const size = 1024 * 1024;
  const proxyUrl = `http://${proxy.username}:${proxy.password}@${stack.gateway.http.replace(/^http:\/\//, "")}`;
  const target = `${stack.targets.https}/bytes/${size}`;
  const { stdout } = await run("curl", [
    "-sS",
    "--cacert",
    stack.targets.caFile,
    "-x",
    proxyUrl,
    target,
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{size_download}",
  ]);
  const [code, got] = stdout.trim().split(" ");
  if (code !== "200" || Number(got) !== size) throw new Error(`curl through the gateway: ${stdout}`);
  step(4, `curl -x ${proxy.username}:***@gateway ${target}: ${code}, ${got} bytes`);

  // 5. The credit shows the bytes (usage is flushed at most 5 s apart).
  const deadline = Date.now() + 15_000;
  let credit: Json = {};
  while (Date.now() < deadline) {
    const res = await fetch(`${api}/v1/x402/manage/pool/credit`, {
      headers: { "X-Session-Token": sessionToken },
    });
    credit = ((await res.json()) as Json).credit ?? {};
    if (Number(credit.usedBytes) >= size) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!(Number(credit.usedBytes) >= size))
    throw new Error(`credit never showed the bytes: ${JSON.stringify(credit)}`);
  step(
    5,
    `credit: used ${credit.usedBytes} of ${credit.allocatedBytes} bytes, ${credit.remainingBytes} left`,
  );
  console.log("demo:agent ok");
}

main().catch((err: unknown) => {
  console.error(`demo:agent failed: ${(err as Error).message}`);
  process.exit(1);
});
