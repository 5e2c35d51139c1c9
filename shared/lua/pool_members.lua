-- pool_members: which endpoints the listing cron and the rollup look at (pool_snapshot.lua then
-- reads them in batches, so no one call holds Redis for the whole pool).
-- KEYS[1]  zset of online devices scored by last presence refresh, ms (presence:online)
-- KEYS[2]  set of listed endpoint ids (pool:listed)
-- ARGV[1]  presence freshness bound, ms: members scored below it are offline
-- returns  {online ids, listed ids}
return { redis.call("ZRANGEBYSCORE", KEYS[1], ARGV[1], "+inf"), redis.call("SMEMBERS", KEYS[2]) }
