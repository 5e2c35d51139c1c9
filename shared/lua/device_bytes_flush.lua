-- device_bytes_flush: adds one relay's per-device byte counts since its last flush.
-- KEYS[1]  hash of the device's cumulative traffic (bytes:dev:{deviceId}), fields up, down, and
--          since: when these counters started (set once), so settlement can tell counters that
--          restarted from zero (lost Redis data) from a stale read
-- KEYS[2]  set of devices that have served at least one byte (devices:served)
-- KEYS[3]  set of devices whose counters grew since their last settlement (devices:unsettled)
-- KEYS[4]  optional: hash writer -> last applied flush seq for this device (bytesflush:{deviceId}),
--          so a retried flush whose first attempt landed credits nothing
-- ARGV[1]  bytes up (peer -> customer) since the last flush
-- ARGV[2]  bytes down (customer -> peer) since the last flush
-- ARGV[3]  deviceId
-- ARGV[4]  now, ms epoch (becomes `since` when the hash is new)
-- ARGV[5]  optional with KEYS[4]: the writer (one relay process)   ARGV[6] its flush seq, increasing
-- returns  integer: 1 if the device joined the served set now, else 0 (also for a repeated flush)
if KEYS[4] and (ARGV[5] or "") ~= "" then
  if tonumber(ARGV[6]) <= tonumber(redis.call("HGET", KEYS[4], ARGV[5]) or "0") then return 0 end
  redis.call("HSET", KEYS[4], ARGV[5], ARGV[6])
  -- writers are relay processes: a restarted relay's entry is garbage a week later
  redis.call("PEXPIRE", KEYS[4], 7 * 86400000)
end
local up = tonumber(ARGV[1])
local down = tonumber(ARGV[2])
if up > 0 then redis.call("HINCRBY", KEYS[1], "up", up) end
if down > 0 then redis.call("HINCRBY", KEYS[1], "down", down) end
if up + down > 0 then
  redis.call("HSETNX", KEYS[1], "since", ARGV[4])
  redis.call("SADD", KEYS[3], ARGV[3])
  return redis.call("SADD", KEYS[2], ARGV[3])
end
return 0
