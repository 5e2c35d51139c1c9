import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..", "..");

/** The go command: $GO, else the toolchain's usual install path, else `go` on PATH. */
export function goCommand(): string {
  if (process.env.GO) return process.env.GO;
  return existsSync("/usr/local/go/bin/go") ? "/usr/local/go/bin/go" : "go";
}

/**
 * Builds peer-go/cmd/peerproxy-peer statically (CGO_ENABLED=0) into `dir` and returns the binary's
 * path; `target` cross-compiles (GOOS/GOARCH). Module downloads go through the Go module proxy.
 */
export async function goBinary(
  dir: string,
  target: { GOOS?: string; GOARCH?: string } = {},
): Promise<string> {
  const suffix = target.GOARCH ? `-${target.GOOS ?? "linux"}-${target.GOARCH}` : "";
  const out = join(dir, `peerproxy-peer${suffix}`);
  await run(goCommand(), ["build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/peerproxy-peer"], {
    cwd: join(root, "peer-go"),
    env: { ...process.env, CGO_ENABLED: "0", GOFLAGS: "-mod=mod", ...target },
    timeout: 300_000,
  });
  return out;
}
