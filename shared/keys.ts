/**
 * Redis key names, in one place, so every process agrees on them. Hash tags ({...}) keep one
 * device's keys on one slot should the store ever be clustered.
 */
export const keys = {
  // ops
  killSwitch: () => "ops:kill_switch",
  jobRuns: (job: string, window: string) => `ops:job_runs:${job}:${window}`,

  // identity (API writes, relay reads)
  /** integer: the device's current JWT revocation generation; tokens with a lower `gen` are invalid */
  deviceGen: (deviceId: string) => `dev:{${deviceId}}:gen`,
  /** rate-limit window counter */
  rateLimit: (scope: string, id: string, window: string) => `rl:${scope}:${id}:${window}`,

  // presence (relay writes, expiring; gateway/prober/cron read)
  /** hash: relayId, relayInternal (http URL of the relay's internal port), sockets, ipType, country,
   *  carrier, accountId, connectedAt, sdkVersion, protocol. TTL ~30 s, refreshed by the relay. */
  presence: (deviceId: string) => `presence:{${deviceId}}`,
  /** zset of online deviceIds scored by last refresh (ms); stale members are swept by readers */
  onlineDevices: () => "presence:online",
  /** hash per relay: relayId -> {publicUrl, internalUrl, region, devices, sockets, updatedAt}; TTL 30 s */
  relayInfo: (relayId: string) => `relay:${relayId}`,

  // traffic (relay flushes per device at most 5 s apart; cron settles into Postgres)
  /** hash: up, down (bytes, HINCRBY) since the last settlement */
  deviceBytes: (deviceId: string) => `bytes:dev:{${deviceId}}`,
  /** set of deviceIds that have served at least one byte (ends the unproven state) */
  servedDevices: () => "devices:served",
  /** hash deviceId -> region: operator setting that a device belongs to another region (relay_redirect) */
  deviceRegionOverride: () => "ops:device_region",
} as const;
