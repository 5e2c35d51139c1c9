import { credentialUsageJob } from "./credential-usage.ts";
import { earningsJob } from "./earnings.ts";
import type { Job } from "./guard.ts";
import { heartbeatJob } from "./heartbeat.ts";
import { listingJob, rollupJob } from "./listing.ts";
import { payoutsJob } from "./payouts.ts";
import { reservationsJob } from "./reservations.ts";

/** Every job the every-minute cron runs, in order. Add a job here and it runs under the guard. */
export const jobs: Job[] = [
  heartbeatJob,
  credentialUsageJob,
  earningsJob,
  payoutsJob,
  reservationsJob,
  listingJob,
  rollupJob,
];
