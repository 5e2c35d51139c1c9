/**
 * Redis key names, in one place, so every process agrees on them. Hash tags ({...}) keep one
 * device's keys on one slot should the store ever be clustered.
 */
export const keys = {
  // ops
  killSwitch: () => "ops:kill_switch",
  /** string: who paused the named autonomous loop and when (ADR 0018); while it exists the loop
   *  records `skipped: paused` instead of acting. Loops: the cron jobs by name, prober, watchdog */
  loopPaused: (loop: string) => `ops:paused:${loop}`,
  /** hash deviceId -> who delisted it and when: the listing cron keeps these off sale (ADR 0018) */
  opsDelisted: () => "ops:delisted",
  jobRuns: (job: string, window: string) => `ops:job_runs:${job}:${window}`,

  // identity (API writes, relay reads)
  /** integer: the device's current JWT revocation generation; tokens with a lower `gen` are invalid */
  deviceGen: (deviceId: string) => `dev:{${deviceId}}:gen`,
  /** pub/sub channel (not a key): "<deviceId> <generation>" when a device's tokens are revoked;
   *  relays close that device's sockets holding an older generation (shared/lua/device_revoke.lua) */
  deviceRevokedChannel: () => "chan:device_revoked",
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
  /** zset: relay public URL (shared/relay-url.ts) -> alive-until (ms), written every presence refresh
   *  and removed when the relay drains or shuts down (relay_alive.lua); the API assigns devices
   *  only relays listed here with a future score (relay_pick.lua) */
  relaysAlive: () => "relays:alive",

  // traffic (relay flushes per device at most 5 s apart; cron settles into Postgres)
  /** hash: up, down (bytes, HINCRBY), cumulative: the earnings cron settles the growth past its
   *  Postgres watermark (devices.settled_bytes), so this hash is never reset; since; class: the IP
   *  class the relay saw the device's socket come from, which earnings accrue at (ADR 0011) */
  deviceBytes: (deviceId: string) => `bytes:dev:{${deviceId}}`,
  /** hash writer (a relay process) -> last applied flush seq: device_bytes_flush.lua credits a retry once */
  deviceBytesFlushSeq: (deviceId: string) => `bytesflush:{${deviceId}}`,
  /** set of deviceIds whose byte counters grew since their last settlement (earnings cron drains) */
  unsettledDevices: () => "devices:unsettled",
  /** set of deviceIds that have served at least one byte (ends the unproven state) */
  servedDevices: () => "devices:served",
  /** set of modem exit ids whose counters grew since their last settlement. A modem exit's counters
   *  are the same hash as a device's (bytes:dev:{modem_...}, written by the gateway; ids never
   *  collide) so the same Lua settles them; the farmer earnings cron drains this set (ADR 0017) */
  unsettledModems: () => "modems:unsettled",
  /** set of modem exit ids that have served at least one byte */
  servedModems: () => "modems:served",
  /** hash deviceId -> region: operator setting that a device belongs to another region (relay_redirect) */
  deviceRegionOverride: () => "ops:device_region",

  // credentials cache (API writes, gateway reads; docs/internal.md "Credentials cache")
  /** hash: accountLabel, accountId, enabled, capBytes, expiresAt, tier, maxConnections, suspendedReason */
  credential: (keyId: string) => `cred:{${keyId}}`,
  /** string: keyId, for the SHA-256 hex of the key's pak_ secret */
  credentialSecret: (secretHash: string) => `credsecret:{${secretHash}}`,
  /** integer: bytes used, both directions (the gateway is the only writer) */
  credentialUsed: (keyId: string) => `credused:{${keyId}}`,
  /** list of keyIds the gateway suspended at their cap, drained by the usage cron */
  credentialSuspendedEvents: () => "events:cred_suspended",
  // endpoint pool and selection (gateway; key names also built inside shared/lua/select_endpoint.lua,
  // list_endpoint.lua and release_hold.lua: change them together)
  /** hash: pool, country, ipType, carrier, city, speedTier, kind (peer|modem), relayInternal, deviceId,
   *  host, port, maxConns, maxCusts, listed (1|0), conns, custs (live counts) */
  endpoint: (endpointId: string) => `ep:{${endpointId}}`,
  /** hash keyId -> live holds on that endpoint (distinct keys = concurrent customers) */
  endpointCustomers: (endpointId: string) => `ep:{${endpointId}}:cust`,
  /** string: the keyId renting this endpoint as a dedicated port; while it exists the endpoint is in
   *  no shared index and selects for that key only (outlives delist/relist of ep:{id}) */
  endpointReservation: (endpointId: string) => `ep:{${endpointId}}:reserved`,
  /** zset endpointId scored by load in [0,1); pool/country/ipType are each also indexed under "any" */
  poolIndex: (pool: string, country: string, ipType: string) => `pool:idx:${pool}:${country}:${ipType}`,
  /** set of listed, unreserved endpoints at their connection cap, per index (E_NO_CAPACITY vs E_NO_STOCK) */
  poolFull: (pool: string, country: string, ipType: string) => `pool:full:${pool}:${country}:${ipType}`,
  /** set of listed endpoint ids */
  poolListed: () => "pool:listed",
  /** zset "holdId|endpointId|keyId" scored by lease expiry (ms): a tunnel's hold on an endpoint */
  poolHolds: () => "pool:holds",
  /** zset holdId scored by lease expiry (ms): a credential's live connections */
  credentialConns: (keyId: string) => `conns:cred:{${keyId}}`,
  /** hash: ep, idx, rotateAt (ms, 0 = never): a sticky session's pinned endpoint */
  session: (keyId: string, sid: string) => `psess:{${keyId}}:${sid}`,
  /** hash tunnelId -> "<outstanding bytes>:<expiry ms>:<last seq>[:c]": byte budgets leased to tunnels */
  credentialLeases: (keyId: string) => `credlease:{${keyId}}`,
  /** integer: the outstanding bytes of the open entries of credlease:{keyId} (lease_bytes.lua keeps it) */
  credentialLeaseSum: (keyId: string) => `credleasesum:{${keyId}}`,
  /** zset tunnelId -> the expiry (ms) of its credlease:{keyId} entry: lapsed leases without a scan */
  credentialLeaseExpiry: (keyId: string) => `credleaseexp:{${keyId}}`,
  /** list (newest first) of JSON exit failures seen by gateways, for the prober's circuit breaker */
  tunnelFailures: () => "cb:tunnel_failures",
  // probe state (prober writes; cron and gateway read): see docs/internal.md "Probe state"
  /** hash: verified, passStreak, failStreak, speedTier, lastProbeAt, lastResult, tlsHandshakeMs,
   *  throughputKBps, paused, pausedReason (built inside shared/lua/pool_snapshot.lua too) */
  probe: (endpointId: string) => `probe:{${endpointId}}`,
  /** zset endpointId scored by next probe time (ms) */
  probeDue: () => "probe:due",

  // x402 (API only)
  /** string, PX ~15 s: a request is redeeming this payment right now; others retry instead of
   *  queueing on Postgres (the UNIQUE consumption key still decides, this only sheds load) */
  x402Redeeming: (consumptionKey: string) => `x402:redeeming:{${consumptionKey}}`,
} as const;
