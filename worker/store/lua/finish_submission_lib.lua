-- finish_submission(msg, seg, events, submit_watch, delivery_watch, receipt_watch, total, now, only):
-- the submission outcome over all `total` segments, set once: rejected if any was rejected,
-- else failed if any failed (or its outcome is unknown), else accepted; nil while any is
-- still open (pending, submitting, or sent and awaiting the SMSC's answer). The first caller
-- records it (a message not yet final takes it as its state; a final outcome is done, an
-- accepted one waits on the delivery watch list) and opens the client receipt it calls for:
-- level 1, or level 2 for a final outcome when only level 2 was asked. Returns
-- {outcome, opened level or 0}, or nil. `only` (optional): the state of the one segment of a
-- one-segment submission, when the caller has just written it (saves reading it back).
-- Needs `open_receipt` and the prelude.
local function finish_submission(msg, seg, events, submit_watch, delivery_watch,
                                 receipt_watch, total, now, only)
  total = tonumber(total) or 0
  local outcome = 'accepted'
  if total > 0 then
    local states
    if total == 1 and only then
      states = {only}  -- the one segment's state, just written by the caller
    else
      local names = {}
      for seq = 1, total do names[seq] = seq .. ':status' end
      states = redis.call('HMGET', seg, unpack(names))
    end
    for seq = 1, total do
      local s = states[seq]
      if s == 'rejected' then outcome = 'rejected'
      elseif (s == 'failed' or s == 'unknown') and outcome ~= 'rejected' then outcome = 'failed'
      elseif not s or s == 'pending' or s == 'submitting' or s == 'sent' then return false
      end
    end
  end
  local m = redis.call('HMGET', msg, 'submit_outcome', 'id', 'status', 'dlr', 'dlr_level')
  if m[1] then return {m[1], 0} end  -- set once: the first caller's outcome stands
  table.remove(m, 1)
  local id = m[1]
  redis.call('ZREM', submit_watch, id)
  if FINAL[m[2]] then
    redis.call('HSET', msg, 'submit_outcome', outcome, 'submitted_at', now)
  elseif FINAL[outcome] then
    redis.call('HSET', msg, 'submit_outcome', outcome, 'submitted_at', now, 'status', outcome,
               'updated_at', now, 'done_at', now)
    redis.call('RPUSH', events, cjson.encode({at = tonumber(now), event = outcome}))
  else
    redis.call('HSET', msg, 'submit_outcome', outcome, 'submitted_at', now, 'status', outcome,
               'updated_at', now)
    redis.call('ZADD', delivery_watch, now, id)
    redis.call('RPUSH', events, cjson.encode({at = tonumber(now), event = outcome}))
  end
  local opened = 0
  if m[3] == '1' then
    local level = m[4] or '1'
    if WANTS_SMSC[level] then
      opened = open_receipt(msg, seg, receipt_watch, 1, now, id)
    elseif FINAL[outcome] then
      opened = open_receipt(msg, seg, receipt_watch, 2, now, id)
    end
  end
  return {outcome, opened}
end
