// Fault shims: how a simulated device's exit network misbehaves, on loopback. Each behaviour owns one
// 127.0.0.x address; a shim listens there on the same ports as the real targets (which listen on
// 127.0.0.1) and forwards to them, misbehaving its own way. The simulator's devices resolve every
// target name to their behaviour's address, so the real peer SDK, relay, gateway and prober see a
// slow, stalling or TLS-dropping exit without any of them being faked.
import { connect, createServer, type Server, type Socket } from "node:net";

export type Behaviour = "good" | "slow" | "stall" | "tlsDrop";

export const SHIM_ADDRESS: Record<Behaviour, string> = {
  good: "127.0.0.1", // the targets themselves
  slow: "127.0.0.2",
  stall: "127.0.0.3",
  tlsDrop: "127.0.0.4",
};

/** Bytes per second a slow exit passes each way, and the latency it adds to a connect. */
export const SLOW_BYTES_PER_SECOND = 64 * 1024;
export const SLOW_CONNECT_DELAY_MS = 300;

function pipeThrottled(from: Socket, to: Socket) {
  // Token bucket per direction, refilled every 100 ms; pausing the source keeps memory bounded.
  let allowance = SLOW_BYTES_PER_SECOND / 10;
  const refill = setInterval(() => {
    allowance = SLOW_BYTES_PER_SECOND / 10;
    if (from.isPaused()) from.resume();
  }, 100);
  from.on("data", (chunk: Buffer) => {
    to.write(chunk);
    allowance -= chunk.length;
    if (allowance <= 0) from.pause();
  });
  from.on("end", () => to.end());
  from.on("close", () => clearInterval(refill));
}

function handle(behaviour: Exclude<Behaviour, "good">, client: Socket, port: number) {
  client.on("error", () => {});
  if (behaviour === "stall") {
    // Accepts and reads, never answers: the exit's path went dark after the TCP handshake.
    client.resume();
    return;
  }
  const upstream = connect({ host: "127.0.0.1", port });
  upstream.on("error", () => client.destroy());
  client.on("close", () => upstream.destroy());
  upstream.on("close", () => client.destroy());
  if (behaviour === "tlsDrop") {
    // A middlebox that kills TLS: the first record a client sends decides (0x16 = handshake).
    client.once("data", (first: Buffer) => {
      if (first[0] === 0x16) return void client.destroy();
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    return;
  }
  client.pause();
  setTimeout(() => {
    client.resume();
    pipeThrottled(client, upstream);
    pipeThrottled(upstream, client);
  }, SLOW_CONNECT_DELAY_MS);
}

/** Shims on 127.0.0.2-4 for each target port; close() stops them all. */
export async function startShims(targetPorts: number[]): Promise<{ close(): Promise<void> }> {
  const servers: Server[] = [];
  const open = new Set<Socket>();
  for (const behaviour of ["slow", "stall", "tlsDrop"] as const) {
    for (const port of targetPorts) {
      const server = createServer((c) => {
        open.add(c);
        c.on("close", () => open.delete(c));
        handle(behaviour, c, port);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, SHIM_ADDRESS[behaviour], () => resolve());
      });
      servers.push(server);
    }
  }
  return {
    async close() {
      for (const c of open) c.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
