import type { Job } from "./guard.ts";
import { heartbeatJob } from "./heartbeat.ts";

/** Every job the every-minute cron runs, in order. Add a job here and it runs under the guard. */
export const jobs: Job[] = [heartbeatJob];
