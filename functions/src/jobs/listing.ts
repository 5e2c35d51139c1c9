import type { SpeedTier } from "../../../shared/pool.ts";
import { reconcileListings } from "../services/listing.ts";
import { refreshRollup } from "../services/rollup.ts";
import { getSetting } from "../services/settings.ts";
import { sharedNow } from "../services/shared-clock.ts";
import type { Job } from "./guard.ts";

/** Every minute: list verified, healthy, fast-enough devices; pull the rest (each flip audited). */
export const listingJob: Job = {
  name: "auto-listing",
  maxRunsPerHour: 120,
  async run(deps) {
    const minTier = await getSetting<SpeedTier>(deps.db, "listing_min_tier", "slow");
    // Presence is stamped by the relays with Redis's clock, so its cut-off is taken on it too.
    const run = await reconcileListings(deps, await sharedNow(deps), minTier);
    return { considered: run.considered, listed: run.listed, delisted: run.delisted };
  },
};

/** Every minute, after listing: the one rollup every surface reads (stock, dashboards, ops). */
export const rollupJob: Job = {
  name: "pool-rollup",
  maxRunsPerHour: 120,
  async run(deps) {
    const rows = await refreshRollup(deps, deps.now(), await sharedNow(deps));
    return { rows: rows.length, listed: rows.reduce((n, r) => n + r.listed, 0) };
  },
};
