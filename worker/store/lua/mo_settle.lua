-- Record what one delivery attempt of an MO's webhook came to.
--
-- KEYS: the MO hash, the MO watch, the MO dead letters (sorted set).
-- ARGV: outcome (`sent`, `gone`, `dead` or `retry`), now (ms), due (ms; `retry` only), why it
-- waits (`retry`), the attempt's HTTP status ('' without an answer).
-- `retry`: a webhook still `sending` becomes `open` again, due then (its watch entry too), and
-- remembers why. `sent` / `gone` / `dead`: done and unwatched (`dead` also dead-lettered).
-- Returns 1, or 0 when the attempt had lost its claim or the MO is gone.
local outcome, now = ARGV[1], ARGV[2]
local id = redis.call('HGET', KEYS[1], 'id')
if not id or redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'last_attempt_at', now, 'status_code', ARGV[5])
if outcome == 'retry' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'lease', 0, 'not_before', ARGV[3],
             'why', ARGV[4])
  redis.call('HSETNX', KEYS[1], 'first_attempt_at', now)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  return 1
end
redis.call('HSET', KEYS[1], 'state', outcome)
redis.call('HDEL', KEYS[1], 'why')
redis.call('ZREM', KEYS[2], id)
if outcome == 'dead' then redis.call('ZADD', KEYS[3], now, id) end
return 1
