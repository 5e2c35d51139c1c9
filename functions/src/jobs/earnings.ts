import { settleEarnings } from "../services/earnings.ts";
import { settleModemEarnings } from "../services/modem-earnings.ts";
import type { Job } from "./guard.ts";

// Per run: 20 passes of 500 devices; a larger backlog is settled by the next minutes.
const PASS_DEVICES = 500;
const MAX_PASSES = 20;

/**
 * Every minute: accrues what devices and farmers' modem exits served since their last settlement into the append-only
 * earnings ledger (functions/src/services/earnings.ts). It moves no money: payouts, when built,
 * go through the approval queue.
 */
export const earningsJob: Job = {
  name: "supplier-earnings",
  maxRunsPerHour: 120,
  async run(deps) {
    let devices = 0;
    let entries = 0;
    let bytes = 0n;
    let amountMicro = 0n;
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      const r = await settleEarnings(deps, PASS_DEVICES);
      devices += r.devices;
      entries += r.entries;
      bytes += BigInt(r.bytes);
      amountMicro += BigInt(r.amountMicro);
      if (r.devices < PASS_DEVICES) break;
    }
    // Farmers' modem exits (ADR 0017), the same way and the same per-run bound.
    let modemExits = 0;
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      const r = await settleModemEarnings(deps, PASS_DEVICES);
      modemExits += r.exits;
      entries += r.entries;
      bytes += BigInt(r.bytes);
      amountMicro += BigInt(r.amountMicro);
      if (r.exits < PASS_DEVICES) break;
    }
    return { devices, modemExits, entries, bytes: String(bytes), amountMicro: String(amountMicro) };
  },
};
