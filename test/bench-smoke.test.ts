// A short run of `npm run bench` (bench/run.ts --smoke): a 20-device fleet of the real peer SDK on
// its own network (own Redis, Postgres, API, two relays, two gateways, prober), every figure for a
// few seconds, no anchors but direct loopback (and figure 1's bare ws server). Pins that the bench still runs end to end and writes
// its table and chart, that the quality loop keeps stalling and TLS-dropping exits unsold, that the
// soak loses no byte and bills exactly what moved, and that the faults (a relay and a gateway
// killed, Redis restarted) leave customers served and nobody billed twice. Timings are printed by
// the bench, never asserted here.
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
    // ... by a relay on the allocator it is deployed with (deploy/: jemalloc preloaded).
    expect(row(/relay memory per idle peer socket \(4[0-9] sockets\)/)).toMatch(
      /KiB \(heap -?\d+\.\d+\), jemalloc/,
    );
    // ... beside its anchor: a bare ws server holding as many sockets, measured the same way.
    expect(row(/relay memory per idle peer socket \(4[0-9] sockets\)/)).toMatch(
      /KiB \(heap -?\d+\.\d+\) bare ws/,
    );
    // ... and through the idle stretch after it, the relay's own collections included.
    expect(
      row(/relay memory per idle peer socket \(4[0-9] sockets\) through the \d+ s idle stretch/),
    ).toMatch(/\| -?\d+\.\d+ \/ -?\d+\.\d+ KiB, jemalloc +\| -?\d+\.\d+ \/ -?\d+\.\d+ KiB bare ws/);
    expect(row(/endpoints verified by the prober and listed/)).toContain("20 of 20");
    expect(row(/CONNECT setup p50, concurrency 4/)).toMatch(/\| \d+(\.\d+)? ms +\| direct/);
    // ... and for paced customers (a pause between streams), beside the same customers going direct.
    expect(row(/CONNECT setup p50 \/ p99, 4 customers pausing 1 s on average/)).toMatch(
      /\| \d+(\.\d+)? ms \/ \d+(\.\d+)? ms +\| direct \d/,
    );
    // Figure 3: through a device alone in its SDK process (the headline) and one of the simulator's.
    expect(row(/one tunnel, to a device alone in its process \(as deployed\), 4 MiB/)).toMatch(
      /\| \d+ MB\/s +\|/,
    );
    expect(row(/one tunnel, to a device among the simulator's .*, 4 MiB/)).toMatch(/\| \d+ MB\/s +\|/);
    expect(row(/one tunnel, to a device alone .*CPU seconds per GB/)).toMatch(
      /gateway \d+\.\d+, relays \d+\.\d+, fleet.*; in GC: gateway \d+\.\d+, relay \d+\.\d+; off the main thread: gateway \d+\.\d+, relay \d+\.\d+; major GCs: gateway \d+, relay \d+/,
    );
    // Figure 2's cost per stream, Redis included.
    expect(row(/streams opened per second at concurrency/)).toMatch(
      /\d+\/s; \d+\.\d+ ms \/ \d+\.\d writes: gateway .*redis/,
    );
    // The quality loop: a stalling and a TLS-dropping exit are never listed for sale.
    const quality = row(/misbehaving exits/);
    expect(quality).toMatch(/stall 0\/\d+ listed/);
    expect(quality).toMatch(/tlsDrop 0\/\d+ listed/);
    // Figure 4: every tunnel's bytes arrived intact both ways, and the metered bytes are the moved ones.
    expect(row(/soak: 40 tunnels/)).toMatch(
      /\| 40 ok; 0 B lost, 0 corrupt\/reordered, 0 short, 0 not opened;/,
    );
    expect(row(/soak billing/)).toMatch(/metered ([\d,]+) B, moved \1 B: \+0 B/);
    // Figure 5: the killed relay's devices came back, the surviving gateway refused nobody, and the
    // Redis restart billed no byte twice.
    expect(row(/fault a: SIGKILL relay/)).toMatch(/\| \d+\.\d s \/ \d+\.\d s +\|/);
    expect(row(/fault b: SIGKILL one gateway/)).toMatch(/\| 0 of [1-9]/);
    const billed = /metered ([\d,]+) B, moved ([\d,]+) B/.exec(row(/fault c: billing across the restart/));
    const [metered, moved] = [billed?.[1], billed?.[2]].map((n) => Number(n?.replaceAll(",", "")));
    expect(metered).toBeLessThanOrEqual(moved!);
    expect(readFileSync(join(out, "latency.svg"), "utf8")).toMatch(/^<svg [^>]*>[\s\S]*<polyline/);
  }, 400_000);
});
