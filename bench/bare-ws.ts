// Figure 1's anchor: a bare `ws` server with no application code, holding the same idle sockets
// as the relay (same ws options, same 30 s JSON heartbeats answered with an ack), so the table shows
// how much of the relay's memory per socket is ws + net.Socket + libuv, not peerproxy.
//   node bench/bare-ws.ts server              # prints `bare-ws listening port=N`; GET / = sockets
//   node bench/bare-ws.ts clients URL COUNT   # prints `bare-ws connected sockets=N`, then heartbeats
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import { MAX_FRAME_BYTES } from "../shared/frame.ts";

const [mode, url, count] = process.argv.slice(2);
const HEARTBEAT = JSON.stringify({ type: "heartbeat", payload: {} });
const ACK = JSON.stringify({ type: "heartbeat_ack", payload: {} });

if (mode === "server") {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
  // Any plain request: how many sockets it holds (the bench reads it with its memory).
  const server = createServer((_req, res) => res.end(String(wss.clients.size)));
  server.on("upgrade", (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("message", (_data, isBinary) => {
        if (!isBinary) ws.send(ACK);
      });
    }),
  );
  server.listen(0, "127.0.0.1", () =>
    console.log(`bare-ws listening port=${(server.address() as AddressInfo).port}`),
  );
} else if (mode === "clients") {
  const total = Number(count);
  let open = 0;
  let started = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const ws = new WebSocket(url!, { perMessageDeflate: false });
      ws.once("open", () => {
        open++;
        // Like the SDK: a heartbeat every 30 s, starting at a random point so they spread.
        setTimeout(() => {
          ws.send(HEARTBEAT);
          setInterval(() => ws.send(HEARTBEAT), 30_000);
        }, Math.random() * 30_000);
        resolve();
      });
      ws.once("error", () => resolve());
    });
  const workers = Array.from({ length: 100 }, async () => {
    while (started < total) {
      started++;
      await one();
    }
  });
  await Promise.all(workers);
  console.log(`bare-ws connected sockets=${open}`);
  setInterval(() => {}, 1 << 30);
} else {
  console.error("usage: bare-ws.ts server | clients URL COUNT");
  process.exit(2);
}
