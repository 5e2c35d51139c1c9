-- tunnel_failure: records a mid-stream or open failure of an exit for the prober's circuit breaker.
-- KEYS[1]  cb:tunnel_failures list (newest first)
-- ARGV[1]  JSON {endpointId, deviceId, kind, reason, at}   ARGV[2] maximum list length kept
-- returns  the list length after the push
redis.call("LPUSH", KEYS[1], ARGV[1])
redis.call("LTRIM", KEYS[1], 0, tonumber(ARGV[2]) - 1)
return redis.call("LLEN", KEYS[1])
