// DEV ONLY. A plain-HTTP loopback target for demo traffic: GET / says hello, GET /bytes/N streams N
// bytes. (The HTTPS target with its own CA is prober/target.ts.)
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { serveBytes } from "../prober/target.ts";

export async function startHttpTarget(
  port = 0,
): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.url === "/" || req.url === "") {
      res.writeHead(200, { "content-type": "text/plain" }).end("hello from the peerproxy local target\n");
      return;
    }
    serveBytes(req, res, "try GET / or GET /bytes/N\n");
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
