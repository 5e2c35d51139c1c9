// A real browser as the customer: Debian's Chromium (driven by playwright-core) through the gateway's
// HTTP proxy with Basic proxy auth, over a real relay and peer to loopback pages: a plain-HTTP page
// (absolute-URI forwarding) and an HTTPS page (CONNECT) whose script fetches more. The gateway is
// limited to 127.0.0.1 so Chromium's own background requests are refused instead of leaving the host.
import { createServer as createHttpServer, type RequestListener, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import {
  curl,
  listPeer,
  makeCredential,
  type TestCredential,
  testGatewayEnv,
} from "../gateway-node/testing.ts";
import { issueCertificates } from "../prober/target.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";

const COUNTRY = "qb";
const CHROMIUM = "/usr/bin/chromium";
const DATA_BYTES = 200_000;

let relay: TestRelay;
let peer: TestPeer;
let gw: Gateway;
let browser: Browser;
let cred: TestCredential;
let deviceId: string;
const servers: Server[] = [];

// The page's script fetches /data; the page reports what it got in its title and body.
const page: RequestListener = (req, res) => {
  if (req.url === "/data") {
    res.writeHead(200, { "content-type": "application/octet-stream" }).end(Buffer.alloc(DATA_BYTES, 7));
    return;
  }
  res.writeHead(200, { "content-type": "text/html" }).end(`<!doctype html><title>loading</title>
<p id="out">...</p>
<script>
  fetch("/data").then((r) => r.arrayBuffer()).then((b) => {
    document.getElementById("out").textContent = "got " + b.byteLength;
    document.title = "peerproxy ok";
  });
</script>`);
};

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  relay = await startTestRelay();
  deviceId = relay.newDeviceId();
  peer = await connectPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId), flow: true });
  await peer.waitFor("connected");
  await listPeer(relay.redis, { deviceId, country: COUNTRY, relayInternal: relay.relay.internalUrl });
  gw = await startGateway(
    loadGatewayConfig(
      testGatewayEnv({ RELAY_SHARED_SECRET: relay.sharedSecret, GATEWAY_TARGET_HOSTS: "127.0.0.1" }),
    ),
    { redis: relay.redis },
  );
  cred = await makeCredential(relay.redis);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    // Loopback is bypassed by default; "<-loopback>" sends it through the proxy too.
    proxy: {
      server: `http://127.0.0.1:${gw.httpPort}`,
      bypass: "<-loopback>",
      username: cred.username(`peer-${COUNTRY}`),
      password: cred.secret,
    },
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  for (const s of servers) await new Promise((r) => s.close(r));
  if (deviceId) await delistEndpoint(relay.redis, deviceId);
  peer?.close();
  await relay?.redis.del(keys.deviceBytes(deviceId));
  await relay?.close();
});

async function visit(url: string): Promise<{ title: string; text: string }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  try {
    const tab = await context.newPage();
    const res = await tab.goto(url, { waitUntil: "load", timeout: 20_000 });
    expect(res?.status()).toBe(200);
    await tab.waitForFunction('document.title === "peerproxy ok"', undefined, { timeout: 20_000 });
    return { title: await tab.title(), text: (await tab.textContent("#out")) ?? "" };
  } finally {
    await context.close();
  }
}

describe("Chromium through the gateway", () => {
  it("loads an HTTP page and its fetch through a peer, authenticating to the proxy with Basic", async () => {
    const port = await listen(createHttpServer(page));
    const before = Number(await relay.redis.get(keys.credentialUsed(cred.keyId)));
    const got = await visit(`http://127.0.0.1:${port}/`);
    expect(got).toEqual({ title: "peerproxy ok", text: `got ${DATA_BYTES}` });
    // Billing follows within one flush; the page and its data are at least DATA_BYTES.
    await expect
      .poll(async () => Number(await relay.redis.get(keys.credentialUsed(cred.keyId))) - before, {
        timeout: 10_000,
      })
      .toBeGreaterThanOrEqual(DATA_BYTES);
  });

  it("loads an HTTPS page over CONNECT through the same peer", async () => {
    const { keyPem, certPem } = issueCertificates();
    const port = await listen(createHttpsServer({ key: keyPem, cert: certPem }, page));
    const before = Number(await relay.redis.get(keys.credentialUsed(cred.keyId)));
    const tunnels = gw.ctx.metrics.tunnelsOpened;
    const got = await visit(`https://127.0.0.1:${port}/`);
    expect(got).toEqual({ title: "peerproxy ok", text: `got ${DATA_BYTES}` });
    expect(gw.ctx.metrics.tunnelsOpened).toBeGreaterThan(tunnels);
    await expect
      .poll(async () => Number(await relay.redis.get(keys.credentialUsed(cred.keyId))) - before, {
        timeout: 10_000,
      })
      .toBeGreaterThanOrEqual(DATA_BYTES);
    // The peer carried it: the relay's per-device counter (flushed at most 5 s apart).
    await expect
      .poll(
        async () => {
          const bytes = await relay.redis.hgetall(keys.deviceBytes(deviceId));
          return Number(bytes.up ?? 0);
        },
        { timeout: 10_000 },
      )
      .toBeGreaterThanOrEqual(2 * DATA_BYTES);
  });

  it("the gateway's host allow-list refuses anything else, as it would Chromium's own background calls", async () => {
    const res = await curl([
      "-sS",
      "-x",
      `http://${cred.username(`peer-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-o",
      "/dev/null",
      "-D",
      "-",
      "http://localhost:9/",
    ]);
    expect(res.stdout).toMatch(/^HTTP\/1\.1 403/);
    expect(res.stdout).toMatch(/E_TARGET_BLOCKED/);
  });
});
