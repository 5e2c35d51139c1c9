// A short run of `npm run bench` (bench/run.ts --smoke): a 20-device fleet of the real peer SDK on
// its own network (own Redis, Postgres, API, relay, gateway, prober), every figure for a few
// seconds, no anchors but direct loopback. Pins that the bench still runs end to end and writes
// its table and chart, and that the quality loop keeps stalling and TLS-dropping exits unsold.
// Timings are printed by the bench, never asserted here.
import { mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startProcess } from "../dev/proc.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");

describe("npm run bench -- --smoke", () => {
  it("runs every figure on a small simulated fleet and writes the table and the latency chart", async () => {
    const out = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "bench-smoke-"));
    const bench = startProcess(
      "bench",
      process.execPath,
      [join(root, "bench", "run.ts"), "--smoke", "--out", out],
      {
        cwd: root,
      },
    );
    const code = await bench.exited;
    expect(code, bench.output().slice(-4000)).toBe(0);

    const md = readFileSync(join(out, "latest.md"), "utf8");
    const row = (figure: RegExp) => md.split("\n").find((l) => figure.test(l)) ?? "";
    // Every socket the fleet opened reached the relay and was measured (20 devices x 2 sockets).
    expect(row(/relay memory per idle peer socket \(4[0-9] sockets\)/)).toMatch(/\d+\.\d+ \/ -?\d+\.\d+ KiB/);
    expect(row(/endpoints verified by the prober and listed/)).toContain("20 of 20");
    expect(row(/CONNECT setup p50, concurrency 4/)).toMatch(/\| \d+(\.\d+)? ms +\| direct/);
    expect(row(/one tunnel, 4 MiB/)).toMatch(/\| \d+ MB\/s +\|/);
    // The quality loop: a stalling and a TLS-dropping exit are never listed for sale.
    const quality = row(/misbehaving exits/);
    expect(quality).toMatch(/stall 0\/\d+ listed/);
    expect(quality).toMatch(/tlsDrop 0\/\d+ listed/);
    expect(readFileSync(join(out, "latency.svg"), "utf8")).toMatch(/^<svg [^>]*>[\s\S]*<polyline/);
  }, 400_000);
});
