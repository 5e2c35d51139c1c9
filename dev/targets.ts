// DEV ONLY. A plain-HTTP loopback target for demo traffic: GET / says hello, GET /bytes/N streams N
// bytes. (The HTTPS target with its own CA is prober/target.ts.)
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

const CHUNK = Buffer.alloc(64 * 1024, "peerproxy-demo-");
const MAX_BYTES = 256 * 1024 * 1024;

export async function startHttpTarget(
  port = 0,
): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.url === "/" || req.url === "") {
      res.writeHead(200, { "content-type": "text/plain" }).end("hello from the peerproxy local target\n");
      return;
    }
    const m = /^\/bytes\/(\d{1,10})$/.exec(req.url ?? "");
    const n = m ? Number(m[1]) : -1;
    if (n < 0 || n > MAX_BYTES) {
      res.writeHead(404, { "content-type": "text/plain" }).end("try GET / or GET /bytes/N\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(n) });
    let left = n;
    const pump = () => {
      while (left > 0) {
        const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
