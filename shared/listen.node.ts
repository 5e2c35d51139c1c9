import type { AddressInfo, Server } from "node:net";

/**
 * The accept queue asked of the kernel, which caps it at net.core.somaxconn (4096 by default on
 * current kernels, 65535 with deploy/sysctl/60-peerproxy.conf). Node's default is 511: a fleet
 * reconnecting to a restarted relay, or a thousand customers connecting to a gateway at once,
 * overflows that, and every SYN dropped costs its client a 1 s, then 3 s, retransmission.
 */
export const LISTEN_BACKLOG = 65_535;

/** Listens on host:port (0: any free port) with LISTEN_BACKLOG; resolves with the bound address. */
export function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
