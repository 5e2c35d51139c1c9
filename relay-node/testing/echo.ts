// A loopback TCP echo server: the target tunnels reach in relay tests.
import { createServer } from "node:net";

export interface EchoServer {
  port: number;
  close(): void;
}

/** Echoes every byte back on 127.0.0.1, on a port the OS picks. */
export async function startEchoServer(): Promise<EchoServer> {
  const server = createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  );
  return { port, close: () => server.close() };
}
