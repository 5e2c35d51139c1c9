// The relay opener's own HTTP exchange (openRelayTunnel), against scripted answers on a loopback
// socket: the shapes a relay, a proxy in front of it or a broken peer of ours could send. The real
// relay's answers are exercised in relay-node/access.test.ts and tunnels.test.ts.
import { randomBytes } from "node:crypto";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { openRelayTunnel, ReadPool, type TunnelOpen } from "./tunnel-open.node.ts";

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A relay stand-in: `answer` gets each connection and the request head it sent. */
async function scripted(
  answer: (sock: Socket, request: string) => void,
): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((sock) => {
    sock.on("error", () => {});
    let head = "";
    const onData = (d: Buffer) => {
      head += d.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      sock.off("data", onData);
      requests.push(head.slice(0, end));
      answer(sock, head.slice(0, end));
    };
    sock.on("data", onData);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const open = (url: string, extra: Partial<Parameters<typeof openRelayTunnel>[0]> = {}) =>
  openRelayTunnel({
    relayInternal: url,
    deviceId: "dev_1",
    secret: "s3cret",
    target: { host: "example.com", port: 443 },
    timeoutMs: 2_000,
    ...extra,
  });

const refusal = (status: number, body: string, extraHeaders = "") =>
  `HTTP/1.1 ${status} X\r\nContent-Type: application/json\r\n${extraHeaders}\r\n${body}`;

/** Everything the tunnel's socket delivers until it closes (pooled sink or 'data'). */
function drain(r: Extract<TunnelOpen, { ok: true }>): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = [r.head];
    if (r.onRead)
      r.onRead((chunk, release) => {
        got.push(Buffer.from(chunk));
        release();
      });
    else r.socket.on("data", (d: Buffer) => got.push(d));
    r.socket.on("close", () => resolve(Buffer.concat(got)));
    r.socket.resume();
  });
}

describe("openRelayTunnel's exchange", () => {
  for (const pooled of [false, true])
    it(`a 101 answer hands over the connection with the bytes that came with it, the rest after (${pooled ? "pooled reads" : "'data' events"})`, async () => {
      const payload = randomBytes(300_000);
      const relay = await scripted((sock) => {
        sock.write(
          Buffer.concat([
            Buffer.from(
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: peerproxy-tunnel/1\r\nConnection: Upgrade\r\n\r\n",
            ),
            payload.subarray(0, 10),
          ]),
        );
        setTimeout(() => sock.end(payload.subarray(10)), 20);
      });
      const pool = new ReadPool();
      const r = await open(relay.url, pooled ? { reads: pool } : {});
      if (!r.ok) throw new Error(`refused: ${JSON.stringify(r)}`);
      expect(r.head.equals(payload.subarray(0, 10))).toBe(true);
      expect(r.onRead !== undefined).toBe(pooled);
      expect((await drain(r)).equals(payload)).toBe(true);
      // full reads went into buffers of their own, given back and read into again
      if (pooled) expect(pool.allocated).toBeGreaterThan(0);
      if (pooled) expect(pool.allocated).toBeLessThanOrEqual(3);
      expect(relay.requests[0]).toMatch(/^POST \/tunnel HTTP\/1\.1\r\n/);
      expect(relay.requests[0]).toContain("\r\nAuthorization: Bearer s3cret");
      expect(relay.requests[0]).toContain("\r\nX-Target: example.com:443");
      expect(relay.requests[0]).toContain("\r\nUpgrade: peerproxy-tunnel/1");
    });

  it("idle pooled tunnels hold no buffer of their own: forty of them, each with a few bytes, allocate none", async () => {
    const relay = await scripted((sock) => {
      sock.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n");
      setTimeout(() => sock.write("hello"), 10);
    });
    const pool = new ReadPool();
    const opened = await Promise.all(Array.from({ length: 40 }, () => open(relay.url, { reads: pool })));
    const got: string[] = [];
    for (const r of opened) {
      if (!r.ok || !r.onRead) throw new Error("expected a pooled tunnel");
      r.onRead((chunk, release) => {
        got.push(chunk.toString());
        release();
      });
      r.socket.resume();
    }
    await expect.poll(() => got.length).toBe(40);
    expect(new Set(got)).toEqual(new Set(["hello"]));
    expect(pool.allocated).toBe(0);
    for (const r of opened) if (r.ok) r.socket.destroy();
  });

  it("reads an answer that arrives one byte at a time", async () => {
    const relay = await scripted(async (sock) => {
      for (const b of Buffer.from(refusal(404, '{"code":"device_not_here"}', "Content-Length: 26\r\n"))) {
        sock.write(Buffer.from([b]));
        await new Promise((r) => setTimeout(r, 1));
      }
    });
    expect(await open(relay.url)).toEqual({
      ok: false,
      failure: "refused",
      status: 404,
      code: "device_not_here",
    });
  });

  it("settles a refusal at its Content-Length without waiting for the connection to close", async () => {
    const relay = await scripted((sock) =>
      sock.write(
        refusal(502, '{"code":"tunnel_open_failed","reason":"dns_failed"}', "Content-Length: 51\r\n"),
      ),
    );
    const t0 = Date.now();
    expect(await open(relay.url)).toEqual({
      ok: false,
      failure: "refused",
      status: 502,
      code: "tunnel_open_failed",
      reason: "dns_failed",
    });
    expect(Date.now() - t0).toBeLessThan(1_500);
  });

  it("reads a refusal without Content-Length until the connection closes; a body that is not JSON gives the status alone", async () => {
    const relay = await scripted((sock) => sock.end(refusal(503, '{"code":"draining"}')));
    expect(await open(relay.url)).toEqual({ ok: false, failure: "refused", status: 503, code: "draining" });
    const html = await scripted((sock) => sock.end("HTTP/1.0 500 Oops\r\n\r\n<html>no</html>"));
    expect(await open(html.url)).toEqual({ ok: false, failure: "refused", status: 500 });
  });

  it("an answer that is not HTTP, or whose head never ends, is a transport failure named as node:http names it", async () => {
    const junk = await scripted((sock) => sock.end("SSH-2.0-OpenSSH\r\n\r\n"));
    expect(await open(junk.url)).toEqual({ ok: false, failure: "transport", code: "HPE_INVALID_CONSTANT" });
    const endless = await scripted((sock) => sock.write(`HTTP/1.1 200 OK\r\nX-Pad: ${"a".repeat(20_000)}`));
    expect(await open(endless.url)).toEqual({ ok: false, failure: "transport", code: "HPE_HEADER_OVERFLOW" });
  });

  it("a connection closed before any answer is a hang-up (ECONNRESET); a refused port is ECONNREFUSED", async () => {
    const rude = await scripted((sock) => sock.destroy());
    expect(await open(rude.url)).toEqual({ ok: false, failure: "transport", code: "ECONNRESET" });
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    expect(await open(`http://127.0.0.1:${port}`)).toEqual({
      ok: false,
      failure: "transport",
      code: "ECONNREFUSED",
    });
  });

  it("a relay that never answers times out, saying the connection was up", async () => {
    const silent = await scripted(() => {});
    expect(await open(silent.url, { timeoutMs: 200 })).toEqual({
      ok: false,
      failure: "timeout",
      connected: true,
    });
  });

  it("an abort settles at once and closes the connection", async () => {
    let closed = false;
    const silent = await scripted((sock) => sock.on("close", () => (closed = true)));
    const ac = new AbortController();
    const pending = open(silent.url, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    expect(await pending).toEqual({ ok: false, failure: "aborted" });
    await expect.poll(() => closed).toBe(true);
  });

  it("refuses to send a header value with CR, LF or NUL (header injection), before connecting", async () => {
    const relay = await scripted((sock) => sock.end(refusal(500, "{}")));
    for (const bad of ["r1\r\nX-Traffic: probe", "r1\nX", "r1\0"])
      expect(await open(relay.url, { requestId: bad })).toEqual({
        ok: false,
        failure: "transport",
        code: "ERR_INVALID_CHAR",
      });
    expect(await open(relay.url, { deviceId: "d\r\n\r\nGET / HTTP/1.1" })).toMatchObject({
      code: "ERR_INVALID_CHAR",
    });
    expect(relay.requests).toEqual([]);
  });

  it("a relay URL that is not http:// or does not parse is bad_url", async () => {
    expect(await open("https://127.0.0.1:1")).toEqual({ ok: false, failure: "bad_url" });
    expect(await open("not a url")).toEqual({ ok: false, failure: "bad_url" });
  });
});
