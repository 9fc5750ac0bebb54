-- Keep one part of a multipart MO; hand back every part once the last one came.
--
-- KEYS: the parts hash (`mo:parts:…`, fields `1`..`total` and `_first`, `_carrier_id`), the
-- durable schedule (sorted set). ARGV: seq, the part's text, total, the hash's ttl (ms), when
-- it was received (ms), the carrier's id of the part ('' if none), the schedule entry that
-- flushes the parts when the wait is over, and when that is due (ms).
-- The first part of a message sets `_first` (its receipt time) and schedules the flush, in the
-- same step, so parts are never kept with nothing to flush them. A part seen twice replaces
-- itself. Returns {0} while parts are missing, or {1, first, carrier id, text 1, …, text N}
-- when all came, to the first caller only (`_claimed`): it stores the MO and deletes the hash
-- in one transaction, or gives the claim back if it cannot (else the flush stores it).
local total = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], '_first', ARGV[5], '_carrier_id', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[7])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local found = redis.call('HMGET', KEYS[1], '_first', '_carrier_id')
local parts = {}
for i = 1, total do
  local text = redis.call('HGET', KEYS[1], tostring(i))
  if not text then return {0} end
  parts[i] = text
end
if redis.call('HSETNX', KEYS[1], '_claimed', ARGV[5]) == 0 then return {0} end
return {1, found[1] or ARGV[5], found[2] or '', unpack(parts)}
