-- endpoints_free: which of the given endpoints could be rented as a dedicated port right now.
-- Key names built here mirror shared/keys.ts (ep:{id}:reserved).
-- KEYS[i]  ep:{id} hash of each candidate endpoint
-- ARGV     (none)
-- returns  array aligned with KEYS: 1 when the endpoint is listed (healthy, on sale) and not
--          reserved in Redis, 0 otherwise
local out = {}
for i, key in ipairs(KEYS) do
  local free = redis.call("HGET", key, "listed") == "1" and redis.call("EXISTS", key .. ":reserved") == 0
  out[i] = free and 1 or 0
end
return out
