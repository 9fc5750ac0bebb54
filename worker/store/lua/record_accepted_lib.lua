-- record_accepted(seg, index, parked, seq, carrier_id, carrier, ref, ttl, state): the carrier
-- took a segment. Its carrier id is indexed (`ref` = `{id}:{seq}`, for `ttl` s), and the
-- segment is in `state` (`accepted`; `sent` when only a gateway took it and the SMSC's answer
-- comes as a receipt) unless a receipt (or another run) already moved it on: a segment never
-- goes backwards. Receipts parked for that carrier id (they came first) are handed back.
-- Returns {1 if recorded now else 0, parked receipts}.
local function record_accepted(seg, index, parked, seq, carrier_id, carrier, ref, ttl, state)
  redis.call('SET', index, ref, 'EX', tonumber(ttl))
  local waiting = redis.call('LRANGE', parked, 0, -1)
  if #waiting > 0 then redis.call('DEL', parked) end
  local s = redis.call('HGET', seg, seq .. ':status')
  if s and s ~= 'pending' and s ~= 'submitting' and s ~= 'unknown' then return {0, waiting} end
  redis.call('HSET', seg, seq .. ':status', state, seq .. ':carrier_id', carrier_id,
             seq .. ':carrier', carrier, seq .. ':error_code', '', seq .. ':error_message', '')
  return {1, waiting}
end
