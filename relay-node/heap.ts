/**
 * How far V8 lets the relay's old generation grow past what its last major GC kept (ADR 0032).
 *
 * Every byte a tunnel moves arrives in a fresh Buffer, and V8 counts Buffers against the heap's
 * limit. With thousands of peer sockets the live heap is tens of MB, and under traffic V8 picks a
 * limit close to it, so a fast tunnel set off a major GC every few tens of MB: its concurrent
 * marking of the whole heap cost the relay more CPU than the bytes did (full bench run, one 100 MiB
 * tunnel: 2-4 major GCs, 1.5-1.7 s per GB on V8's helper threads, out of 3.3-5.8 s per GB). A
 * growing factor of 2 stops that, but an idle relay then also keeps twice its garbage (RSS per idle
 * socket 5.8 -> 8.2 KiB at 16,000 sockets). So the factor applies only while tunnels are open; an
 * idle relay gets V8's own, memory first.
 */
import { setFlagsFromString } from "node:v8";

export interface HeapGrowth {
  /** Call with the number of open tunnels whenever it changes; cheap when nothing flips. */
  update(openTunnels: number): void;
}

/**
 * `percent` 0 leaves V8 its own factor always (RELAY_HEAP_GROWING_PERCENT). The flag is the
 * process's: one relay per process, as deployed (relays started inside one test process share it).
 */
export function heapGrowth(percent: number, setFlags = setFlagsFromString): HeapGrowth {
  let busy = false;
  return {
    update(openTunnels) {
      const want = percent > 0 && openTunnels > 0;
      if (want === busy) return;
      busy = want;
      // V8 reads it when it sets the next limit, after each major GC; 0 is its own (dynamic) factor.
      setFlags(`--heap-growing-percent=${want ? percent : 0}`);
    },
  };
}
