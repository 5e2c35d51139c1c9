-- select_endpoint: atomically picks an exit endpoint for one tunnel and takes a lease-style hold on it.
-- Key names built here mirror shared/keys.ts (ep:{id}, ep:{id}:cust, ep:{id}:reserved,
-- pool:idx:<pool>:<country>:<iptype>).
-- KEYS[1]  index zset for the request's pool/country/iptype (member endpointId, score = load, see reindex)
-- KEYS[2]  pool:holds zset (member "holdId|endpointId|keyId", score = lease expiry ms)
-- KEYS[3]  conns:cred:{keyId} zset of the credential's live holds (score = expiry ms)
-- KEYS[4]  session hash sess:{keyId}:{sid} (ignored when ARGV[6] is "")
-- KEYS[5]  pool:full set for the same pool/country/iptype: listed endpoints at their connection cap
-- ARGV[1]  now (ms)          ARGV[2] holdId           ARGV[3] keyId (the "customer" for caps)
-- ARGV[4]  lease ms          ARGV[5] credential connection limit (0 = none)
-- ARGV[6]  rotation: "" (no sid) | sticky | hard | ondemand | auto
-- ARGV[7]  rotate interval ms (auto)   ARGV[8] session ttl ms   ARGV[9] carrier ("" = any)
-- ARGV[10] city ("" = any)   ARGV[11] random in [0,1) for the tiebreak   ARGV[12] candidates read per page
-- ARGV[13] space-separated endpoint ids to skip (exits that just failed for this request; may be "")
-- ARGV[14] pinned endpoint id ("" = none): a dedicated credential gets exactly this endpoint, and only
--          while ep:{id}:reserved names it; no index, session or preference is consulted
-- ARGV[15] device id from the username's pin-device ("" = none): exactly that device's endpoint, in
--          the requested pool (ARGV[16], "any" = either); its state is named when it cannot serve
--          (presence:{id}, probe:{id}, bytes:dev:{id}, dev:{id}:gen tell offline from unknown)
-- returns  {"ok", endpointId, holdMember, moved("0"|"1"), field, value, ...endpoint hash}
--          or {"err", code, message}; code E_NO_CAPACITY when matching endpoints exist but all are
--          at their caps, E_NO_STOCK when none is listed
local now = tonumber(ARGV[1])
local holdId, cust = ARGV[2], ARGV[3]
local leaseMs, credMax = tonumber(ARGV[4]), tonumber(ARGV[5])
local rot, rotateMs, ttlMs = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local carrier, city, rnd, pageSize = ARGV[9], ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
local skip = {}
for id in string.gmatch(ARGV[13] or "", "%S+") do skip[id] = true end
local pinnedTo = ARGV[14] or ""
local pinDevice, wantPool = ARGV[15] or "", ARGV[16] or "any"
-- a candidate was listed but at its connection or customer cap: busy, not empty
local busy = false

local function reservedKey(id) return "ep:{" .. id .. "}:reserved" end

--@include lib/pool_index.lua

--@include lib/release_counts.lua

-- A dead gateway stops renewing: its holds expire here, so capacity cannot leak.
local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, 64)
for _, m in ipairs(expired) do
  redis.call("ZREM", KEYS[2], m)
  local _, _, _, id, who = string.find(m, "^([^|]*)|([^|]*)|(.*)$")
  if id then releaseCounts(id, who) end
end

redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now)
if credMax > 0 and redis.call("ZCARD", KEYS[3]) >= credMax then
  return { "err", "E_RATE_LIMITED", "connection limit of " .. credMax .. " reached for this credential" }
end

local function usable(id)
  local f = redis.call("HMGET", epKey(id), "listed", "conns", "maxConns", "custs", "maxCusts")
  if f[1] ~= "1" then return false end
  -- A reserved endpoint takes its renter only, past the customer cap (it is the renter's modem);
  -- indexes never hold one, but a sticky session may still name it from before the reservation.
  local renter = redis.call("GET", reservedKey(id))
  if renter and renter ~= cust then return false end
  if (tonumber(f[2]) or 0) >= (tonumber(f[3]) or 0) then
    busy = true
    return false
  end
  if renter then return true end
  if (tonumber(f[4]) or 0) < (tonumber(f[5]) or 0) then return true end
  if (tonumber(redis.call("HGET", custKey(id), cust)) or 0) > 0 then return true end
  busy = true
  return false
end

-- Best = fewest soft-preference misses (carrier, city), then lowest load; random among equals.
-- Scores in [0,1) take any customer; [1,2) only those already on the endpoint (read second).
-- A page is ranked from its scores alone (plus carrier and city when the customer asked for them)
-- and usability is checked lazily, best rank first, from a random start within each group of equal
-- rank: a page of idle endpoints costs one check or two, not one per candidate. When every check
-- fails, every candidate was checked, so `busy` means what it did when all were.
local function pickFresh(exclude)
  local prefs = carrier ~= "" or city ~= ""
  for _, range in ipairs({ { "-inf", "(1" }, { "1", "(2" } }) do
    local best, bestRank = nil, nil
    local offset = 0
    for _ = 1, 8 do
      local page = redis.call("ZRANGEBYSCORE", KEYS[1], range[1], range[2], "WITHSCORES", "LIMIT", offset, pageSize)
      if #page == 0 then break end
      local cands = {}
      for i = 1, #page, 2 do
        local id = page[i]
        if id ~= exclude and not skip[id] then
          local miss = 0
          if prefs then
            local f = redis.call("HMGET", epKey(id), "carrier", "city")
            if carrier ~= "" and f[1] ~= carrier then miss = miss + 1 end
            if city ~= "" and f[2] ~= city then miss = miss + 1 end
          end
          cands[#cands + 1] = { id = id, rank = miss * 4 + tonumber(page[i + 1]), at = i }
        end
      end
      -- The page comes in score order; misses reorder it (by rank, then page order).
      if prefs then
        table.sort(cands, function(a, b)
          if a.rank ~= b.rank then return a.rank < b.rank end
          return a.at < b.at
        end)
      end
      local g = 1
      while g <= #cands and (bestRank == nil or cands[g].rank < bestRank) do
        local rank, h = cands[g].rank, g
        while h < #cands and cands[h + 1].rank == rank do h = h + 1 end
        local n = h - g + 1
        local first = math.floor(rnd * n)
        for k = 0, n - 1 do
          local c = cands[g + (first + k) % n]
          if usable(c.id) then
            best, bestRank = c.id, rank
            break
          end
        end
        if best ~= nil and bestRank == rank then break end
        g = h + 1
      end
      -- Later pages only hold higher loads: they cannot beat a candidate that matched every preference.
      if bestRank ~= nil and bestRank < 4 then break end
      if #page < pageSize * 2 then break end
      offset = offset + pageSize
    end
    if best ~= nil then return best end
  end
  return nil
end

local chosen, moved = nil, "0"
if pinnedTo ~= "" then
  if redis.call("GET", reservedKey(pinnedTo)) ~= cust then
    return { "err", "E_NO_STOCK", "the dedicated endpoint of this credential is no longer reserved to it" }
  end
  if skip[pinnedTo] then
    return { "err", "E_NO_STOCK", "the dedicated endpoint of this credential failed to open" }
  end
  if not usable(pinnedTo) then
    if busy then return { "err", "E_NO_CAPACITY", "the dedicated endpoint of this credential is at its connection limit" } end
    return { "err", "E_NO_STOCK", "the dedicated endpoint of this credential is offline" }
  end
  chosen = pinnedTo
elseif pinDevice ~= "" then
  -- Exactly this device or a named refusal; never another device.
  local name = "device " .. pinDevice
  local f = redis.call("HMGET", epKey(pinDevice), "listed", "kind", "pool")
  if f[1] ~= "1" or f[2] ~= "peer" then
    if redis.call("EXISTS", "presence:{" .. pinDevice .. "}") == 1 then
      return { "err", "E_NO_STOCK", name .. " is online but not listed for sale (not verified yet, paused or failing probes)" }
    end
    local known = redis.call("EXISTS", "probe:{" .. pinDevice .. "}", "bytes:dev:{" .. pinDevice .. "}", "dev:{" .. pinDevice .. "}:gen")
    if known > 0 then return { "err", "E_NO_STOCK", name .. " is offline" } end
    return { "err", "E_NO_STOCK", name .. " is unknown (never seen online)" }
  end
  if wantPool ~= "any" and f[3] ~= wantPool then
    return { "err", "E_NO_STOCK", name .. " is in pool " .. tostring(f[3]) .. ", not " .. wantPool }
  end
  local renter = redis.call("GET", reservedKey(pinDevice))
  if renter and renter ~= cust then return { "err", "E_NO_STOCK", name .. " is reserved (a dedicated port)" } end
  if skip[pinDevice] then return { "err", "E_NO_STOCK", name .. " failed to open a tunnel" } end
  if not usable(pinDevice) then
    return { "err", "E_NO_CAPACITY", name .. " is at its connection limit" }
  end
  chosen = pinDevice
elseif rot ~= "" then
  local s = redis.call("HMGET", KEYS[4], "ep", "idx", "rotateAt")
  local pinned = s[1]
  if pinned and s[2] == KEYS[1] then
    local due = (tonumber(s[3]) or 0) > 0 and now >= tonumber(s[3])
    local ok = usable(pinned)
    if ok and not due then
      chosen = pinned
    elseif not ok and rot == "hard" then
      return { "err", "E_SESSION_PEER_GONE", "the session's device is no longer available" }
    else
      chosen = pickFresh(pinned)
      if not chosen and ok then chosen = pinned end
      moved = "1"
    end
  else
    chosen = pickFresh(nil)
  end
  if chosen and (chosen ~= pinned or moved == "1") then
    local rotateAt = 0
    if rot == "auto" then rotateAt = now + rotateMs end
    local fresh = redis.call("EXISTS", KEYS[4]) == 0 or s[2] ~= KEYS[1]
    redis.call("HSET", KEYS[4], "ep", chosen, "idx", KEYS[1], "rotateAt", rotateAt)
    if fresh then redis.call("PEXPIRE", KEYS[4], ttlMs) end
  end
else
  chosen = pickFresh(nil)
end
if not chosen then
  if busy or redis.call("SCARD", KEYS[5]) > 0 then
    return { "err", "E_NO_CAPACITY", "every endpoint for this pool, country and iptype is at its connection limit" }
  end
  return { "err", "E_NO_STOCK", "no endpoint available for this pool, country and iptype" }
end

redis.call("HINCRBY", epKey(chosen), "conns", 1)
if tonumber(redis.call("HINCRBY", custKey(chosen), cust, 1)) == 1 then
  redis.call("HINCRBY", epKey(chosen), "custs", 1)
end
local member = holdId .. "|" .. chosen .. "|" .. cust
redis.call("ZADD", KEYS[2], now + leaseMs, member)
redis.call("ZADD", KEYS[3], now + leaseMs, holdId)
reindex(chosen)

local out = { "ok", chosen, member, moved }
local h = redis.call("HGETALL", epKey(chosen))
for i = 1, #h do out[#out + 1] = h[i] end
return out
