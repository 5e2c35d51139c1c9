-- probe_claim: takes the endpoints whose probe is due, pushing each one's score out by a lease so a
-- second prober (or this one on its next tick) does not probe it twice; if the prober dies mid-probe
-- the endpoint simply comes due again when the lease ends.
-- KEYS[1]  probe:due zset (member endpointId, score = next probe time in ms)
-- ARGV[1]  now (ms)   ARGV[2] how many to claim at most   ARGV[3] lease (ms)
-- ARGV[4]  endpoint id prefix this prober serves ("" = all)
-- returns  the claimed endpoint ids, most overdue first
local now, limit, lease, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if limit <= 0 then return {} end
-- Scan a bounded window past the limit so other shards' members cannot starve this prefix.
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit * 10 + 100)
local claimed = {}
for _, id in ipairs(due) do
  if prefix == "" or string.sub(id, 1, #prefix) == prefix then
    redis.call("ZADD", KEYS[1], "XX", now + lease, id)
    claimed[#claimed + 1] = id
    if #claimed >= limit then break end
  end
end
return claimed
