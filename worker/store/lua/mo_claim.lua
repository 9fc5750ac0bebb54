-- Take an MO's webhook for one delivery attempt.
--
-- KEYS: the MO hash, the MO watch (sorted set of ids by when they must have moved).
-- ARGV: now (ms), lease (ms: longer than the attempt can take).
-- Returns 0 when there is nothing to deliver (no such MO, no webhook, done, taken by an
-- attempt whose lease runs, or not due yet). Else the webhook is `sending` until the lease
-- ends (and watched until then), its attempt is counted, and the reply holds what the attempt
-- needs: {attempt, from, to, text, carrier, received_at, key_id, mo_url, first_attempt_at,
-- base, keyword, parts, missing}.
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'state', 'lease', 'not_before', 'id', 'from', 'to',
                     'text', 'carrier', 'received_at', 'key_id', 'mo_url', 'first_attempt_at',
                     'base', 'keyword', 'parts', 'missing')
local state = r[1]
if state ~= 'open' and state ~= 'sending' then return 0 end
if state == 'sending' and tonumber(r[2] or '0') > now then return 0 end
if tonumber(r[3] or '0') > now + 1000 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease', now + lease)
redis.call('ZADD', KEYS[2], now + lease, r[4])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {attempt, r[5] or '', r[6] or '', r[7] or '', r[8] or '', r[9] or '', r[10] or '',
        r[11] or '', r[12] or '', r[13] or '', r[14] or '', r[15] or '', r[16] or ''}
