// DEV ONLY. The WebSocket-to-TCP proxy the Neon serverless driver expects in front of Postgres
// (GET /v1?address=host:port, then raw Postgres wire bytes in binary messages). Never deployed.
import { createConnection } from "node:net";
import { WebSocketServer } from "ws";

// Postgres frontend Terminate message: 'X' + int32 length 4. The driver's end() waits for the
// server to drop the socket, so we end the TCP side as soon as we forward it.
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

export interface NeonProxy {
  /** Value for neonConfig.wsProxy's prefix: "127.0.0.1:PORT/v1". */
  wsProxy: string;
  port: number;
  close(): Promise<void>;
}

/** Only loopback targets are accepted: this proxy must never become an open relay. */
export async function startNeonProxy(opts: { port?: number } = {}): Promise<NeonProxy> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: opts.port ?? 0, path: "/v1" });
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
  wss.on("connection", (ws, req) => {
    const address = new URL(req.url ?? "/", "http://x").searchParams.get("address") ?? "";
    const m = /^(127\.0\.0\.1|localhost):(\d+)$/.exec(address);
    if (!m) {
      ws.close(1008, "only loopback Postgres addresses are proxied");
      return;
    }
    const tcp = createConnection({ host: "127.0.0.1", port: Number(m[2]) });
    tcp.setNoDelay(true);
    const pending: Buffer[] = [];
    let connected = false;
    tcp.on("connect", () => {
      connected = true;
      for (const b of pending.splice(0)) tcp.write(b);
    });
    ws.on("message", (data: Buffer) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      if (connected) tcp.write(buf);
      else pending.push(buf);
      if (buf.length >= 5 && buf.subarray(buf.length - 5).equals(TERMINATE)) tcp.end();
    });
    tcp.on("data", (chunk) => {
      if (ws.readyState === ws.OPEN) ws.send(chunk);
    });
    tcp.on("close", () => ws.close());
    tcp.on("error", () => ws.close());
    ws.on("close", () => tcp.destroy());
    ws.on("error", () => tcp.destroy());
  });
  const addr = wss.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    wsProxy: `127.0.0.1:${port}/v1`,
    port,
    async close() {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}
