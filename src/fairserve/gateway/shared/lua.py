"""The Lua scripts of the Redis state: each decision is one atomic script, one round trip.

Times inside the scripts are Redis's own clock (``TIME``), so replicas whose
clocks disagree still agree on bucket refills and lease expiry. Numbers that
are not whole go back as strings (Redis truncates Lua numbers to integers).

The epoch (``KEYS[1]``) tells a restarted (empty) Redis from the one a
replica knew: a replica passes the epoch it last saw; when the key is gone or
different, the scripts that grant leases refuse for a settle window
(``KEYS[2]``, ``settle_ms``) in which every live replica re-asserts the
leases it holds, so a restart does not hand the same engine slots out twice.
A replica that never saw an epoch (a fresh start) creates it without one.
"""

from __future__ import annotations

_TIME = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_EPOCH = """
local function check_epoch(me, known, settle_ms)
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    epoch = me .. '@' .. now_ms
    redis.call('SET', KEYS[1], epoch)
    if known ~= '' then redis.call('SET', KEYS[2], '1', 'PX', settle_ms) end
  elseif known ~= '' and epoch ~= known then
    redis.call('SET', KEYS[2], '1', 'PX', settle_ms)
  end
  return epoch
end
"""

#: Publish, on the wake channel, the first ``count`` replicas waiting for a
#: backend (its waiters, best rank first), space-separated: a waiting replica
#: asks again as soon as its name comes, instead of at its next poll.
#: Publishing touches no key, so it holds on Redis Cluster too.
_WAKE = """
local function wake(channel, waiters, count)
  if count < 1 then return 0 end
  local next_ = redis.call('ZRANGE', waiters, 0, count - 1)
  if #next_ > 0 then redis.call('PUBLISH', channel, table.concat(next_, ' ')) end
  return #next_
end
"""

#: Check and charge a tenant's request and token buckets, both or neither.
#: KEYS[1] the tenant's bucket hash. ARGV: requests_per_min (0: none),
#: tokens_per_min (0: none), cost_tokens, seed levels (requests, tokens: the
#: replica's last view, used when the hash is gone), ttl_s.
#: Returns {taken 0/1, wait_s, requests level, tokens level}.
RATE = (
    _TIME
    + """
local now = now_ms / 1000
local function level(field, cap, seed)
  local v = redis.call('HMGET', KEYS[1], field, field .. '@')
  local l, s = tonumber(v[1]), tonumber(v[2])
  if l == nil or s == nil then return math.min(cap, seed) end
  if now > s then l = math.min(cap, l + (now - s) * cap / 60) end
  return l
end
local rcap, tcap, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rl, tl, wait = 0, 0, 0
if rcap > 0 then
  rl = level('r', rcap, tonumber(ARGV[4]))
  if rl < 1 then wait = (1 - rl) * 60 / rcap end
end
if tcap > 0 then
  tl = level('t', tcap, tonumber(ARGV[5]))
  if tl < cost then wait = math.max(wait, (cost - tl) * 60 / tcap) end
end
if wait > 0 then return {0, tostring(wait), tostring(rl), tostring(tl)} end
if rcap > 0 then rl = rl - 1; redis.call('HSET', KEYS[1], 'r', tostring(rl), 'r@', tostring(now)) end
if tcap > 0 then tl = tl - cost; redis.call('HSET', KEYS[1], 't', tostring(tl), 't@', tostring(now)) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {1, '0', tostring(rl), tostring(tl)}
"""
)

#: Grant up to ``want`` engine slots on one of the given backends, in order.
#: KEYS: epoch, settle, the last-poll hash of the replicas, then per backend
#: its leases (sorted set, member -> expiry ms) and its waiters (sorted set,
#: replica -> the rank of its head request). ARGV: me, known epoch, ttl_ms,
#: settle_ms, waiter_ttl_ms (a waiter not heard from in this long has left),
#: my rank, the wake channel, n backends, their caps, then the ``want`` lease
#: names to use.
#: Expired leases are dropped first. A replica is granted slots only when the
#: backend's free slots exceed the live replicas waiting ahead of it (a lower
#: rank: the head the fleet's policy would serve first); else it stays among
#: the backend's waiters, so a freed slot goes to the fleet's best head rather
#: than to whichever replica asks first. With a live replica waiting behind
#: it, a replica gets one slot (its head's): its next request may rank after
#: that replica's head, so it asks again with its new head's rank; slots it
#: leaves free wake the waiters next in line (``_WAKE``).
#: Returns {status (1 granted, 0 wait, -1 epoch changed, -2 settling), epoch,
#: backend position (1-based), granted}.
ACQUIRE = (
    _TIME
    + _EPOCH
    + _WAKE
    + """
local me, known, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local epoch = check_epoch(me, known, ARGV[4])
if known ~= '' and epoch ~= known then return {-1, epoch, 0, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {-2, epoch, 0, 0} end
local waiter_ttl_ms = tonumber(ARGV[5])
local rank = ARGV[6]
local n = tonumber(ARGV[8])
local want = #ARGV - 8 - n
local best, best_g, best_free = 0, 0, 0
local held = {}  -- per backend: free slots held for the waiters ahead
for i = 1, n do
  local leases, waiters = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now_ms)
  redis.call('ZADD', waiters, rank, me)
  redis.call('PEXPIRE', waiters, ttl_ms * 4)
  local ahead, behind, mine = 0, 0, false
  for _, r in ipairs(redis.call('ZRANGE', waiters, 0, -1)) do
    if r == me then
      mine = true
    else
      local seen = tonumber(redis.call('HGET', KEYS[3], r))
      if seen == nil or seen < now_ms - waiter_ttl_ms then
        redis.call('ZREM', waiters, r)
      elseif mine then
        behind = behind + 1
      else
        ahead = ahead + 1
      end
    end
  end
  local free = tonumber(ARGV[8 + i]) - redis.call('ZCARD', leases) - ahead
  local g = math.min(want, free)
  if behind > 0 then g = math.min(g, 1) end
  if g > best_g then best, best_g, best_free = i, g, free end
  held[i] = math.min(ahead, free + ahead)
end
redis.call('HSET', KEYS[3], me, now_ms)
redis.call('PEXPIRE', KEYS[3], ttl_ms * 4)
if best == 0 then
  -- Slots held for better-ranked waiters that have not come for them (their
  -- wake went to a head that has since left): wake them again.
  for i = 1, n do wake(ARGV[7], KEYS[3 + 2 * i], held[i]) end
  return {0, epoch, 0, 0}
end
local leases = KEYS[2 + 2 * best]
for k = 1, best_g do redis.call('ZADD', leases, now_ms + ttl_ms, ARGV[8 + n + k]) end
redis.call('PEXPIRE', leases, ttl_ms * 4)
for i = 1, n do redis.call('ZREM', KEYS[3 + 2 * i], me) end
wake(ARGV[7], KEYS[3 + 2 * best], best_free - best_g)
return {1, epoch, best, best_g}
"""
)

#: Give engine slots back and leave the waiters of backends no longer waited
#: for; each backend with a slot freed (or a waiter gone from its head) wakes
#: the replicas next in line (``_WAKE``). KEYS: per backend its leases and
#: its waiters. ARGV: me, the wake channel, then per backend: 1 to leave its
#: waiters (else 0), a count and that many lease names. Returns the number of
#: replicas woken.
RELEASE = (
    _WAKE
    + """
local me, channel, pos, woken = ARGV[1], ARGV[2], 3, 0
for i = 1, #KEYS, 2 do
  local leave, count = ARGV[pos] == '1', tonumber(ARGV[pos + 1])
  local freed = 0
  if count > 0 then freed = redis.call('ZREM', KEYS[i], unpack(ARGV, pos + 2, pos + 1 + count)) end
  if leave and redis.call('ZREM', KEYS[i + 1], me) == 1 then freed = math.max(freed, 1) end
  woken = woken + wake(channel, KEYS[i + 1], freed)
  pos = pos + count + 2
end
return woken
"""
)

#: Renew (or, after a restart, re-create) the leases a replica holds.
#: KEYS: epoch, settle, then one leases key per backend. ARGV: me, known
#: epoch, ttl_ms, settle_ms, then per backend: a count and that many members.
#: Returns the epoch.
RENEW = (
    _TIME
    + _EPOCH
    + """
local me, known, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local epoch = check_epoch(me, known, ARGV[4])
local pos = 5
for i = 3, #KEYS do
  local count = tonumber(ARGV[pos])
  for k = 1, count do redis.call('ZADD', KEYS[i], now_ms + ttl_ms, ARGV[pos + k]) end
  if count > 0 then redis.call('PEXPIRE', KEYS[i], ttl_ms * 4) end
  pos = pos + count + 1
end
return epoch
"""
)

#: Merge this replica's fair-queuing counter changes and queue lengths into
#: the fleet's, and read the tenants' bucket levels. KEYS: epoch, settle,
#: counters hash, replicas sorted set (replica -> expiry ms), queued hash
#: (``tenant|replica`` -> requests), then each tenant's bucket hash. ARGV: me,
#: known epoch, ttl_ms, settle_ms, then per tenant: name, the service charged
#: here since the last sync (added), the replica's full counter (seeds a
#: counter the hash lacks: a fresh or restarted Redis; and, when the replica
#: lifted the tenant since, the floor it lifted to: the fleet's counter
#: becomes at least that, so two replicas lifting one tenant lift it once),
#: 1 if lifted, requests queued here, requests_per_min and tokens_per_min
#: (0: none). A dead replica's queue lengths are dropped once
#: its entry expires. Returns {epoch, then per tenant: fleet counter, fleet
#: queued, requests level, tokens level ('' for a bucket Redis does not hold)}.
SYNC = (
    _TIME
    + _EPOCH
    + """
local me, known, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local epoch = check_epoch(me, known, ARGV[4])
redis.call('ZADD', KEYS[4], now_ms + ttl_ms, me)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[4], ttl_ms * 4)
local live = {}
for _, r in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do live[r] = true end
local function level(key, field, cap)
  local v = redis.call('HMGET', key, field, field .. '@')
  local l, s = tonumber(v[1]), tonumber(v[2])
  if cap == 0 or l == nil or s == nil then return '' end
  return tostring(math.min(cap, l + math.max(0, now_ms / 1000 - s) * cap / 60))
end
local out = {epoch}
local names = {}
for pos = 5, #ARGV, 7 do
  local tenant, delta, full, queued = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 4]
  local bucket = KEYS[5 + (pos - 5) / 7 + 1]
  local value
  if redis.call('HEXISTS', KEYS[3], tenant) == 1 then
    value = redis.call('HINCRBYFLOAT', KEYS[3], tenant, delta)
    if ARGV[pos + 3] == '1' and tonumber(full) > tonumber(value) then
      redis.call('HSET', KEYS[3], tenant, full)
      value = full
    end
  else
    redis.call('HSET', KEYS[3], tenant, full)
    value = full
  end
  redis.call('HSET', KEYS[5], tenant .. '|' .. me, queued)
  names[tenant] = #out + 1
  out[#out + 1] = tostring(value)
  out[#out + 1] = 0
  out[#out + 1] = level(bucket, 'r', tonumber(ARGV[pos + 5]))
  out[#out + 1] = level(bucket, 't', tonumber(ARGV[pos + 6]))
end
redis.call('PEXPIRE', KEYS[3], 86400000)
redis.call('PEXPIRE', KEYS[5], ttl_ms * 4)
local flat = redis.call('HGETALL', KEYS[5])
for k = 1, #flat, 2 do
  local tenant, replica = string.match(flat[k], '^(.*)|([^|]*)$')
  if not live[replica] then
    redis.call('HDEL', KEYS[5], flat[k])
  elseif names[tenant] then
    local at = names[tenant] + 1
    out[at] = out[at] + tonumber(flat[k + 1])
  end
end
return out
"""
)
