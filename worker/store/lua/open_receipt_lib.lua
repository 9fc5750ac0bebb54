-- open_receipt(msg, seg, watch, level, now, id): open the client receipt of a level, once.
--
-- Its state becomes `open`, its content is fixed now (`receipt_snapshot`: what every attempt
-- and replay will send) and it is put on the receipt watch list (due now); `id` is the
-- message's id when the caller has it. Returns the level when this call opened it, 0 when it
-- was open already. Needs `snapshot`.
local function open_receipt(msg, seg, watch, level, now, id)
  local p = 'rcpt:' .. level .. ':'
  local snap, state = receipt_snapshot(msg, seg, level)
  if state then return 0 end
  redis.call('HSET', msg, p .. 'state', 'open', p .. 'snap', snap)
  redis.call('ZADD', watch, now, (id or redis.call('HGET', msg, 'id')) .. ':' .. level)
  return level
end
