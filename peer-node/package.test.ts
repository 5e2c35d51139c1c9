import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { startProcess } from "../dev/proc.ts";
import { startStandinApi, startStandinRelay } from "./testing/standins.ts";

// The SDK as a user gets it: `npm pack` (prepack builds dist/), unpacked as npm would place it in
// an empty project, run through the file its package.json names as the `peerproxy-peer` bin. The
// dependencies are linked from this checkout's node_modules instead of installed: `npm install`
// would have to reach the registry, and tests reach nothing beyond loopback.
const run = promisify(execFile);
const here = import.meta.dirname;
const tmp = mkdtempSync(join(tmpdir(), "peer-package-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("the packaged SDK", () => {
  it("packs with its build, and the packaged bin registers and connects like the source CLI", async () => {
    await run("npm", ["pack", "--pack-destination", tmp, "--loglevel=error"], {
      cwd: here,
      timeout: 120_000,
    });
    const tarball = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    expect(tarball).toMatch(/^peerproxy-peer-\d+\.\d+\.\d+\.tgz$/);

    const project = join(tmp, "project");
    const installed = join(project, "node_modules", "@peerproxy", "peer");
    mkdirSync(installed, { recursive: true });
    await run("tar", ["xzf", join(tmp, tarball!), "-C", installed, "--strip-components=1"]);
    const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as {
      bin: Record<string, string>;
      dependencies: Record<string, string>;
    };
    for (const dep of Object.keys(manifest.dependencies))
      symlinkSync(join(here, "..", "node_modules", dep), join(project, "node_modules", dep));
    const binFile = join(installed, manifest.bin["peerproxy-peer"]!);
    const bin = (args: string[]) => [binFile, ...args];
    // npm runs the bin through its shebang line: it must name node.
    expect(readFileSync(binFile, "utf8").split("\n")[0]).toBe("#!/usr/bin/env node");

    // A bad flag: the guide's contract is a clear error and exit code 2.
    const bad = await run(process.execPath, bin(["-key=psx_pkg", "-connections=9"]), { cwd: project }).catch(
      (e) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid value "9" for -connections');

    const relay = await startStandinRelay();
    const api = await startStandinApi(relay.url);
    const peer = startProcess(
      "packaged-peer",
      process.execPath,
      bin([
        "-key=psx_pkg",
        "-name=pkg-001",
        "-connections=2",
        `-state=${join(tmp, "state.json")}`,
        `-api=${api.url}`,
      ]),
      { cwd: project, env: { HOME: tmp } },
    );
    try {
      await peer.waitFor(
        /\[REGISTERED\] device=agent_[0-9a-f]{16} relay=ws:\/\/127\.0\.0\.1:\d+ sockets=2/,
        15_000,
      );
      await peer.waitFor(/\[ACK\] relay confirmed connection socket=1\b/, 15_000);
      await peer.waitFor(/\[ACK\] relay confirmed connection socket=2\b/, 15_000);
      expect(relay.conns.length).toBeGreaterThanOrEqual(2);
    } finally {
      await peer.stop("SIGTERM");
      await api.close();
      await relay.close();
    }
  }, 180_000);
});
