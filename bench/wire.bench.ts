// The relay's WebSocket layer alone (relay-node/wire.ts) against the `ws` server it replaced, in
// the same run: a `ws` client in this process moves 64 KiB binary messages to and from a server in
// a child process, and the server's own CPU time per GiB is what is compared (the client's cost is
// the same for both). Also the heap a server holds per idle socket.
//   npm run bench:wire                # 512 MiB each way, 3 rounds, 4,000 idle sockets
//   WIRE_MIB=256 WIRE_ROUNDS=2 WIRE_IDLE=2000 npm run bench:wire
import { fork } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { WebSocket, WebSocketServer } from "ws";
import { acceptWebSocket, type WireHandler } from "../relay-node/wire.ts";

type Impl = "ws" | "wire";
const MESSAGE = 64 * 1024;
const HIGH_WATER = 4 * 1024 * 1024;

interface Report {
  bytes: number;
  cpuMs: number;
}

/** The server: counts what arrives, sends what it is asked for, and reports its CPU time. */
function serve(impl: Impl) {
  let received = 0;
  let cpu = process.cpuUsage();
  const chunk = Buffer.alloc(MESSAGE, 7);
  const cpuMs = () => {
    const d = process.cpuUsage(cpu);
    return (d.user + d.system) / 1000;
  };
  // One control message: "reset" starts a measurement, "report" ends an upload, "send N" a download.
  const onText = (
    text: string,
    send: (b: Buffer | string, cb?: () => void) => void,
    buffered: () => number,
  ) => {
    if (text === "reset") {
      received = 0;
      cpu = process.cpuUsage();
      send("ok");
    } else if (text === "report") send(JSON.stringify({ bytes: received, cpuMs: cpuMs() }));
    else if (text.startsWith("send ")) {
      let left = Number(text.slice(5));
      cpu = process.cpuUsage();
      const pump = () => {
        while (left > 0) {
          left -= MESSAGE;
          // Over the high-water mark: go on once this message is written.
          if (left > 0 && buffered() >= HIGH_WATER) return send(chunk, pump);
          send(chunk);
        }
        send(JSON.stringify({ bytes: Number(text.slice(5)), cpuMs: cpuMs() }));
      };
      pump();
    }
  };
  const server = createServer((_req, res) => {
    globalThis.gc?.();
    res.end(String(process.memoryUsage().heapUsed));
  });
  if (impl === "ws") {
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4 << 20 });
    server.on("upgrade", (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) =>
        ws.on("message", (data, isBinary) => {
          if (isBinary) received += (data as Buffer).length;
          else
            onText(
              String(data),
              (b, cb) => ws.send(b, cb),
              () => ws.bufferedAmount,
            );
        }),
      ),
    );
  } else {
    const handler: WireHandler<undefined> = {
      message(ws, data, isBinary) {
        if (isBinary) received += data.length;
        else
          onText(
            data.toString(),
            (b, cb) => ws.send(b, cb),
            () => ws.bufferedAmount,
          );
      },
      alive() {},
      error() {},
      close() {},
    };
    server.on("upgrade", (req, socket, head) =>
      acceptWebSocket(req, socket, head, { protocol: undefined, handler, maxPayload: 4 << 20 }),
    );
  }
  server.listen(0, "127.0.0.1", () => process.send?.((server.address() as AddressInfo).port));
  // A clean exit, so --cpu-prof (WIRE_NODE_ARGS) writes its profile.
  process.on("message", () => process.exit(0));
}

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function nextText(ws: WebSocket): Promise<string> {
  return new Promise((resolve) => {
    const on = (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      ws.off("message", on);
      resolve(String(data));
    };
    ws.on("message", on);
  });
}

async function upload(ws: WebSocket, bytes: number): Promise<{ mbps: number; cpuMsPerGiB: number }> {
  ws.send("reset");
  await nextText(ws);
  const chunk = Buffer.alloc(MESSAGE, 3);
  const started = performance.now();
  for (let sent = 0; sent < bytes; sent += MESSAGE) {
    if (ws.bufferedAmount > HIGH_WATER) await new Promise<void>((r) => ws.send(chunk, () => r()));
    else ws.send(chunk);
  }
  ws.send("report");
  const report = JSON.parse(await nextText(ws)) as Report;
  const seconds = (performance.now() - started) / 1000;
  return { mbps: report.bytes / 1e6 / seconds, cpuMsPerGiB: report.cpuMs / (report.bytes / 2 ** 30) };
}

async function download(ws: WebSocket, bytes: number): Promise<{ mbps: number; cpuMsPerGiB: number }> {
  let got = 0;
  const count = (data: Buffer, isBinary: boolean) => {
    if (isBinary) got += data.length;
  };
  ws.on("message", count);
  const started = performance.now();
  const done = nextText(ws);
  ws.send(`send ${bytes}`);
  const report = JSON.parse(await done) as Report;
  ws.off("message", count);
  const seconds = (performance.now() - started) / 1000;
  if (got < bytes) throw new Error(`download: ${got} of ${bytes} bytes`);
  return { mbps: got / 1e6 / seconds, cpuMsPerGiB: report.cpuMs / (bytes / 2 ** 30) };
}

async function idleHeap(url: string, count: number): Promise<number> {
  const heap = async () => Number(await (await fetch(url.replace("ws:", "http:"))).text());
  const before = await heap();
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += 100)
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, count - i) }, () => open(url)))));
  await new Promise((r) => setTimeout(r, 500));
  const after = await heap();
  for (const s of sockets) s.terminate();
  return (after - before) / count / 1024;
}

async function main() {
  const mib = Number(process.env.WIRE_MIB ?? 512);
  const rounds = Number(process.env.WIRE_ROUNDS ?? 3);
  const idle = Number(process.env.WIRE_IDLE ?? 4000);
  const bytes = mib * 2 ** 20;
  const rows: Record<
    Impl,
    { up: number[]; upCpu: number[]; down: number[]; downCpu: number[]; heap: number[] }
  > = {
    ws: { up: [], upCpu: [], down: [], downCpu: [], heap: [] },
    wire: { up: [], upCpu: [], down: [], downCpu: [], heap: [] },
  };
  for (let round = 0; round < rounds; round++) {
    for (const impl of ["ws", "wire"] as const) {
      const child = fork(fileURLToPath(import.meta.url), ["server", impl], {
        execArgv: ["--expose-gc", ...(process.env.WIRE_NODE_ARGS ?? "").split(" ").filter(Boolean)],
      });
      const port = await new Promise<number>((r) => child.once("message", (p) => r(Number(p))));
      const url = `ws://127.0.0.1:${port}`;
      const ws = await open(url);
      const up = await upload(ws, bytes);
      const down = await download(ws, bytes);
      ws.close();
      const heap = await idleHeap(url, idle);
      child.send("exit");
      await new Promise((r) => child.once("exit", r));
      const r = rows[impl];
      r.up.push(up.mbps);
      r.upCpu.push(up.cpuMsPerGiB);
      r.down.push(down.mbps);
      r.downCpu.push(down.cpuMsPerGiB);
      r.heap.push(heap);
      console.log(
        `[wire] round ${round + 1} ${impl}: upload ${up.mbps.toFixed(0)} MB/s (${up.cpuMsPerGiB.toFixed(0)} ms CPU/GiB), download ${down.mbps.toFixed(0)} MB/s (${down.cpuMsPerGiB.toFixed(0)} ms CPU/GiB), heap ${heap.toFixed(2)} KiB per idle socket`,
      );
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const line = (what: string, key: keyof (typeof rows)["ws"], digits: number) => {
    const w = median(rows.wire[key]);
    const b = median(rows.ws[key]);
    return `| ${what} | ${w.toFixed(digits)} | ${b.toFixed(digits)} | ${(w / b).toFixed(2)}x |`;
  };
  console.log(
    [
      `\n${mib} MiB each way in 64 KiB messages, ${rounds} rounds (medians), ${idle} idle sockets\n`,
      "| server-side figure | wire.ts | ws (same run) | ratio |",
      "| --- | --- | --- | --- |",
      line("client -> server MB/s", "up", 0),
      line("server CPU per GiB received (ms)", "upCpu", 0),
      line("server -> client MB/s", "down", 0),
      line("server CPU per GiB sent (ms)", "downCpu", 0),
      line("server heap per idle socket (KiB)", "heap", 2),
    ].join("\n"),
  );
}

if (process.argv[2] === "server") serve(process.argv[3] as Impl);
else await main();
