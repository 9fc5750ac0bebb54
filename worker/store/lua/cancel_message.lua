-- Cancel a message before its submission.
--
-- KEYS: message hash, segments hash, events list, submit watch, delivery watch, receipt watch.
-- ARGV: now (ms), the `cancelled` event (JSON).
-- A message still queued or scheduled becomes final `cancelled` (its submission outcome too:
-- nothing was sent), leaves the watch lists, and opens its receipt as any final outcome before
-- submission does: level 1 (`cancelled` / `DELETED`), or level 2 when only level 2 was asked.
-- Returns the opened level, 0 when no receipt was asked for, -1 when the message could not be
-- cancelled (gone, being submitted, or final). Needs `snapshot` and `open_receipt_lib`.
local status = redis.call('HGET', KEYS[1], 'status')
if not CANCELLABLE[status] then return -1 end
local now = ARGV[1]
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'submit_outcome', 'cancelled',
           'updated_at', now, 'done_at', now)
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
redis.call('RPUSH', KEYS[3], ARGV[2])
if redis.call('HGET', KEYS[1], 'dlr') ~= '1' then return 0 end
local level = redis.call('HGET', KEYS[1], 'dlr_level') or '1'
if WANTS_SMSC[level] then return open_receipt(KEYS[1], KEYS[2], KEYS[6], 1, now) end
return open_receipt(KEYS[1], KEYS[2], KEYS[6], 2, now)
