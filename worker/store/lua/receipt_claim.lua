-- Take one opened client receipt for a delivery attempt.
--
-- KEYS: message hash, segments hash, receipt watch (sorted set `{id}:{level}` by when due).
-- ARGV: level, now (ms), lease (ms: longer than the attempt can take).
-- Returns 0 when the receipt is done, taken by another attempt whose lease runs, or not due
-- yet; -1 when it is a level 2 whose level 1 (same message, level 3) is not done: it waits
-- (`waiting`) and closing level 1 releases it. Else the receipt is `sending` until the lease
-- ends (the reconciler leaves it alone until then), its attempt is counted, and the reply
-- holds what the attempt needs: {seq, attempt, snapshot JSON, dlr_url, dlr_method,
-- dlr_batch, key_id, to, from, client_ref, first_attempt_at, base}. `seq` is the order the
-- client sees them in: 1, or the level for a level-3 message (level 1 always goes first).
-- The snapshot was fixed when the receipt opened (made now for a receipt opened before
-- snapshots existed). Needs `snapshot`.
local lvl, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local msg, p = KEYS[1], 'rcpt:' .. ARGV[1] .. ':'
local r = redis.call('HMGET', msg, p .. 'state', p .. 'lease', p .. 'not_before', 'dlr_level',
                     p .. 'attempts', 'rcpt:1:state', p .. 'snap', 'dlr_url', 'dlr_method',
                     'dlr_batch', 'key_id', 'to', 'from', 'client_ref', p .. 'first_attempt_at',
                     p .. 'base')
local state = r[1]
if not state or RECEIPT_DONE[state] then return 0 end
if state == 'sending' and tonumber(r[2] or '0') > now then return 0 end
-- A second chain of attempts (a republished task) must not run ahead of the scheduled one.
if tonumber(r[3] or '0') > now + 1000 then return 0 end
if lvl == '2' and r[4] == '3' and not RECEIPT_DONE[r[6]] then
  redis.call('HSET', msg, p .. 'state', 'waiting')
  return -1
end
local seq = (r[4] == '3') and tonumber(lvl) or 1
local attempt = (tonumber(r[5]) or 0) + 1
local snap = r[7]
local set = {p .. 'state', 'sending', p .. 'lease', now + lease, p .. 'attempts', attempt}
if not snap then
  snap = receipt_snapshot(msg, KEYS[2], lvl)
  set[#set + 1] = p .. 'snap'
  set[#set + 1] = snap
end
redis.call('HSET', msg, unpack(set))
return {seq, attempt, snap, r[8] or '', r[9] or '', r[10] or '', r[11] or '', r[12] or '',
        r[13] or '', r[14] or '', r[15] or '', r[16] or ''}
