-- cred_state: reads many credentials' live state in one round trip (lists, usage cron).
-- KEYS     pairs: cred:{keyId1}, credused:{keyId1}, cred:{keyId2}, credused:{keyId2}, ...
-- ARGV     none
-- returns  per pair four strings: cached (1|0), enabled, suspendedReason, usedBytes
local out = {}
for i = 1, #KEYS, 2 do
  local fields = redis.call("HMGET", KEYS[i], "enabled", "suspendedReason")
  local cached = "0"
  if fields[1] then
    cached = "1"
  end
  out[#out + 1] = cached
  out[#out + 1] = fields[1] or ""
  out[#out + 1] = fields[2] or ""
  out[#out + 1] = redis.call("GET", KEYS[i + 1]) or "0"
end
return out
