import { reconcileReservations, releaseDueReservations } from "../services/modem-reservations.ts";
import type { Job } from "./guard.ts";

/**
 * Every minute: ends dedicated-port reservations whose time is up (the modem goes back into the
 * shared pool), then makes Redis match Postgres for the rest (docs/adr/0005-x402-dedicated-port.md).
 */
export const reservationsJob: Job = {
  name: "dedicated-reservations",
  maxRunsPerHour: 120,
  async run(deps) {
    const released = await releaseDueReservations(deps);
    const reconciled = await reconcileReservations(deps);
    return {
      released: released.released,
      releaseFailures: released.failures,
      reasserted: reconciled.reasserted,
      reconcileFailures: reconciled.failures,
    };
  },
};
