-- device_bytes_pending: devices with unsettled traffic and their cumulative counters, read in one
-- step for the earnings cron. Nothing is removed here: device_bytes_settled does that after the
-- ledger commit, so a crash in between loses nothing. Key names built here mirror shared/keys.ts
-- (bytes:dev:{deviceId}).
-- KEYS[1]  set of devices whose counters grew since their last settlement (devices:unsettled)
-- ARGV[1]  at most this many devices (a random sample of the set)
-- returns  flat array {deviceId, up, down, since, class, ...}: cumulative bytes as strings ("0"
--          when absent), when the counters started ("" when absent) and the IP class the relay saw
--          the device's socket come from ("" when it could not tell; ADR 0011)
local ids = redis.call("SRANDMEMBER", KEYS[1], tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local c = redis.call("HMGET", "bytes:dev:{" .. id .. "}", "up", "down", "since", "class")
  out[#out + 1] = id
  out[#out + 1] = c[1] or "0"
  out[#out + 1] = c[2] or "0"
  out[#out + 1] = c[3] or ""
  out[#out + 1] = c[4] or ""
end
return out
