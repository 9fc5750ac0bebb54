-- transition(msg, events, submit_watch, delivery_watch, to, event, now, allowed, cur):
-- move a message to state `to` when its state (`cur`, read when not given) is one of
-- `allowed` (a set); a final state also sets `done_at` and takes the message off the submit
-- and delivery watch lists. The event (JSON) goes to its history. Returns 1 if it moved.
local function transition(msg, events, submit_watch, delivery_watch, to, event, now, allowed,
                          cur)
  cur = cur or redis.call('HGET', msg, 'status')
  if not cur or not allowed[cur] then return 0 end
  if FINAL[to] then
    redis.call('HSET', msg, 'status', to, 'updated_at', now, 'done_at', now)
    local id = redis.call('HGET', msg, 'id')
    redis.call('ZREM', submit_watch, id)
    redis.call('ZREM', delivery_watch, id)
  else
    redis.call('HSET', msg, 'status', to, 'updated_at', now)
  end
  redis.call('RPUSH', events, event)
  return 1
end
