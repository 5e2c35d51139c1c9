import { advanceOpenPayouts, advancePayout, treasuryFromConfig } from "../services/payouts.ts";
import { solanaTreasuryFromConfig } from "../services/payouts-solana.ts";
import type { Job } from "./guard.ts";

const PER_RUN = 20;
// Every-minute cron plus one run per approval decided: far above honest use, low enough to stop a loop.
const MAX_RUNS_PER_HOUR = 600;

/**
 * Every minute: moves approved payouts forward (sign and record, broadcast, confirmations) and
 * reconciles any a crash left half-way (functions/src/services/payouts.ts). It only pays what a
 * human approved.
 */
export const payoutsJob: Job = {
  name: "payouts",
  maxRunsPerHour: MAX_RUNS_PER_HOUR,
  async run(deps) {
    const outcomes = await advanceOpenPayouts(
      deps,
      treasuryFromConfig(deps.config),
      PER_RUN,
      await solanaTreasuryFromConfig(deps.config),
    );
    return { payouts: outcomes };
  },
};

/** The same executor for one payout right after its approval, under the same guard and run cap. */
export function payoutJobFor(withdrawalId: string, waitMs: number): Job {
  return {
    name: "payouts",
    maxRunsPerHour: MAX_RUNS_PER_HOUR,
    async run(deps) {
      const solana = await solanaTreasuryFromConfig(deps.config);
      return {
        ...(await advancePayout(deps, treasuryFromConfig(deps.config), withdrawalId, { waitMs, solana })),
      };
    },
  };
}
