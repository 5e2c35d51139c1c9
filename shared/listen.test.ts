import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { expect, it } from "vitest";
import { LISTEN_BACKLOG, listen } from "./listen.node.ts";

it("listens with the deepest accept queue the kernel allows (ss shows it), not Node's 511", async () => {
  const server = createServer();
  const { port } = await listen(server, 0, "127.0.0.1");
  try {
    // For a listening socket, ss reports the accept queue's limit as Send-Q (the third column).
    const line = execFileSync("ss", ["-ltnH", `sport = :${port}`], { encoding: "utf8" }).trim();
    const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
    expect(Number(line.split(/\s+/)[2])).toBe(Math.min(LISTEN_BACKLOG, somaxconn));
  } finally {
    server.close();
  }
});
