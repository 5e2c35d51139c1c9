-- reserve_endpoint: reserves an endpoint for one credential (a dedicated port) or ends that reservation.
-- Key names built here mirror shared/keys.ts (ep:{id}, pool:idx:<pool>:<country>:<iptype>).
-- KEYS[1]  ep:{id}:reserved string: the renting keyId (outlives delist/relist of ep:{id})
-- ARGV[1]  endpoint id   ARGV[2] "reserve" | "release"
-- ARGV[3]  keyId: reserve sets it (replacing any other); release ends the reservation only while it
--          still names this keyId ("" = whoever holds it)
-- returns  1 when the call changed or confirmed the state asked for, 0 when release found another renter
local id, mode, keyId = ARGV[1], ARGV[2], ARGV[3]

--@include lib/pool_index.lua

if mode == "reserve" then
  redis.call("SET", KEYS[1], keyId)
  reindex(id)
  return 1
end
local renter = redis.call("GET", KEYS[1])
if renter and keyId ~= "" and renter ~= keyId then return 0 end
redis.call("DEL", KEYS[1])
reindex(id)
return 1
