-- Take one of `limit` concurrent slots (`worker.ratelimit.ConcurrencyLimiter`).
--
-- KEYS: the holders (sorted set: token -> lease end, µs). ARGV: limit, token, lease (µs).
-- Expired leases are dropped first, so a holder that died frees its slot when its lease ends.
-- Returns 1 (taken) or 0 (all taken).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(lease / 1000) + 1000)
return 1
