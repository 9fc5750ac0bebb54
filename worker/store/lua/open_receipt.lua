-- open_receipt(msg, seg, watch, level, now): open the client receipt of a level, once.
--
-- Its state becomes `open`, its content is fixed now (`receipt_snapshot`: what every attempt
-- and replay will send) and it is put on the receipt watch list (due now). Returns the level
-- when this call opened it, 0 when it was open already. Needs the library `snapshot`.
local function open_receipt(msg, seg, watch, level, now)
  if redis.call('HSETNX', msg, 'rcpt:' .. level .. ':state', 'open') == 1 then
    redis.call('HSET', msg, 'rcpt:' .. level .. ':snap', receipt_snapshot(msg, seg, level))
    redis.call('ZADD', watch, now, redis.call('HGET', msg, 'id') .. ':' .. level)
    return level
  end
  return 0
end
