-- Raises a device's JWT revocation generation and tells every relay at once (pub/sub), so the
-- sockets that authenticated with an older generation close within seconds, not at their next
-- reconnect. Publishing the stored generation even when it did not rise makes a retry repair a
-- relay that missed the first message.
-- KEYS[1]  dev:{<deviceId>}:gen
-- ARGV[1]  the device's new generation (integer); lower or equal leaves the key as it is
-- ARGV[2]  the pub/sub channel relays subscribe to (keys.deviceRevokedChannel())
-- ARGV[3]  deviceId
-- returns  the generation now stored (integer)
local current = tonumber(redis.call("GET", KEYS[1]) or "0") or 0
local gen = tonumber(ARGV[1])
if gen > current then
  redis.call("SET", KEYS[1], ARGV[1])
  current = gen
end
redis.call("PUBLISH", ARGV[2], ARGV[3] .. " " .. tostring(current))
return current
