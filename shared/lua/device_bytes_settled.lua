-- device_bytes_settled: takes devices out of the unsettled set once their counters are in the
-- ledger, unless the relay flushed more bytes since they were read (those stay for the next run).
-- Key names built here mirror shared/keys.ts (bytes:dev:{deviceId}).
-- KEYS[1]  set of devices whose counters grew since their last settlement (devices:unsettled)
-- ARGV     triples: deviceId, up, down, exactly as device_bytes_pending returned them
-- returns  integer: devices removed from the set
local removed = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  local c = redis.call("HMGET", "bytes:dev:{" .. id .. "}", "up", "down")
  if (c[1] or "0") == ARGV[i + 1] and (c[2] or "0") == ARGV[i + 2] then
    removed = removed + redis.call("SREM", KEYS[1], id)
  end
end
return removed
