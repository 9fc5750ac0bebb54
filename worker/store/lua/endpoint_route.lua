-- Put a client receipt in its endpoint's queue, and say whether a drain must be started.
--
-- KEYS: the endpoint's queue (sorted set `{id}:{level}` by when due), its ring flag.
-- ARGV: member, due (ms), now (ms), earliest start of a drain for it (ms: `due`, or later to
-- gather a `dlr-batch` window), batch size that starts a drain at once (0: none), flag slack
-- (ms: how long a planned ring outlives its time, should the drain task be lost).
-- The ring flag is a planned drain's time (ms) or `run:{token}` while a drain runs; a running
-- drain takes what is due, so nothing else is needed. Returns the time (ms) a drain must be
-- started at (now, or later: the caller publishes it), or 0 when one is planned soon enough.
-- While an endpoint backs off its flag plans the drain for the backoff's end; should the flag
-- be gone, the drain started finds the backoff (`endpoint_take.lua`) and plans itself anew.
local due, now, want = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], due, ARGV[1])
local flag = redis.call('GET', KEYS[2])
if flag and string.sub(flag, 1, 4) == 'run:' then return 0 end
local full = tonumber(ARGV[5]) > 0 and want > now
             and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5])
if full then want = now end
if flag and tonumber(flag) <= want then return 0 end
redis.call('SET', KEYS[2], want, 'PX', math.max(want - now, 0) + tonumber(ARGV[6]))
return want
