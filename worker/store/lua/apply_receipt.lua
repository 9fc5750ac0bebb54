-- Apply one carrier receipt to its segment and re-derive the message's state, atomically.
--
-- KEYS: message hash, segments hash, events list, delivery watch, receipt watch, submit watch.
-- ARGV: seq, the state the receipt reports, error code, error message, now (ms).
-- A segment never goes backwards: a duplicate or late receipt changes nothing. A segment
-- `sent` (a gateway took it, its SMSC's answer pending) takes any receipt — an acceptance, a
-- refusal, or a terminal one, which implies the SMSC took it — and then the submission may
-- finish (`finish_submission`, opening level 1); only a `sent` segment becomes `unknown` (the
-- reconciler's verdict when no answer came in time). The message becomes final once: when
-- every segment is terminal (rejected > undelivered > expired > delivered), and then opens
-- its level-2 receipt if it was asked. Returns {segment changed, message status, became
-- final now, level-2 opened or 0, level opened by finishing the submission or 0}.
-- Needs `snapshot`, `open_receipt_lib`, `finish_submission_lib` and the prelude.
local seq, new, now = ARGV[1], ARGV[2], ARGV[5]
local f = seq .. ':status'
local cur = redis.call('HGET', KEYS[2], f) or 'pending'
local changed = 0
if cur == 'sent' or (not FINAL[cur] and new ~= 'unknown') then
  if new == 'accepted' then
    if cur ~= 'accepted' then
      redis.call('HSET', KEYS[2], f, 'accepted')
      changed = 1
    end
  else
    redis.call('HSET', KEYS[2], f, new, seq .. ':error_code', ARGV[3],
               seq .. ':error_message', ARGV[4], seq .. ':done_at', now)
    changed = 1
  end
end
local m = redis.call('HMGET', KEYS[1], 'status', 'segments', 'id', 'dlr', 'dlr_level')
local was, total, id = m[1], tonumber(m[2] or '0') or 0, m[3]
local mstatus = was
local submitted = 0
if changed == 1 and cur == 'sent' then
  local r = finish_submission(KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[4], KEYS[5], total, now)
  if r then submitted = r[2] end
  mstatus = redis.call('HGET', KEYS[1], 'status')
end
if changed == 0 or FINAL[mstatus] then
  local ended = (FINAL[mstatus] and not FINAL[was]) and 1 or 0
  return {changed, mstatus, ended, 0, submitted}
end
local rejected, undelivered, expired = false, false, false
if total > 0 then
  local states
  if total == 1 and seq == '1' then
    states = {new}  -- changed == 1 here: the one segment's state is what was just written
  else
    local names = {}
    for i = 1, total do names[i] = i .. ':status' end
    states = redis.call('HMGET', KEYS[2], unpack(names))
  end
  for i = 1, total do
    local s = states[i]
    if s == 'rejected' then rejected = true
    elseif s == 'undelivered' or s == 'failed' then undelivered = true
    elseif s == 'expired' then expired = true
    elseif s ~= 'delivered' then return {changed, mstatus, 0, 0, submitted}
    end
  end
end
local final = 'delivered'
if rejected then final = 'rejected'
elseif undelivered then final = 'undelivered'
elseif expired then final = 'expired' end
redis.call('HSET', KEYS[1], 'status', final, 'done_at', now, 'updated_at', now)
redis.call('ZREM', KEYS[4], id)
redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(now), event = final}))
local opened = 0
local level = m[5] or '1'
if m[4] == '1' and WANTS_TERMINAL[level] then
  opened = open_receipt(KEYS[1], KEYS[2], KEYS[5], 2, now, id)
end
return {changed, final, 1, opened, submitted}
