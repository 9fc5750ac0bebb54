-- receipt_snapshot(msg, seg, level): what a client receipt says, fixed when its event happens.
--
-- Reads the message hash `msg` and its segments hash `seg` and returns the receipt's content as
-- JSON: {status, segments = {total, accepted, delivered, failed}, carrier?, error?,
-- submitted_at?, done_at?} (timestamps in ms, as strings), and the level's receipt state (false
-- when none: `open_receipt` reads it in the same round). Level 1 reports the submission
-- outcome, level 2 the message's final state. Stored with the receipt when it opens, so every
-- attempt and every replay sends the same content, whatever happened to the message since.
-- Needs the prelude's SEGMENT_TAKEN, SEGMENT_FAILED and RECEIPT_OK tables.
local function receipt_snapshot(msg, seg, level)
  local f = redis.call('HMGET', msg, 'status', 'submit_outcome', 'segments', 'submitted_at',
                       'done_at', 'error_code', 'error_message', 'rcpt:' .. level .. ':state')
  local status = f[1]
  if tonumber(level) == 1 then status = f[2] or f[1] end
  local total = tonumber(f[3] or '0') or 0
  local accepted, delivered, failed = 0, 0, 0
  local carrier, err = nil, nil
  if total > 0 then
    local names = {}
    for i = 1, total do
      names[#names + 1] = i .. ':status'
      names[#names + 1] = i .. ':carrier'
      names[#names + 1] = i .. ':error_code'
      names[#names + 1] = i .. ':error_message'
    end
    local v = redis.call('HMGET', seg, unpack(names))
    for i = 0, total - 1 do
      local s, c, code, text = v[4 * i + 1] or 'pending', v[4 * i + 2], v[4 * i + 3], v[4 * i + 4]
      if SEGMENT_TAKEN[s] then accepted = accepted + 1 end
      if s == 'delivered' then delivered = delivered + 1 end
      if SEGMENT_FAILED[s] then failed = failed + 1 end
      if not carrier and c and c ~= '' then carrier = c end
      if not err and code and code ~= '' and SEGMENT_FAILED[s] then
        err = {code = code, message = text or ''}
      end
    end
  end
  if not err and f[6] and f[6] ~= '' then err = {code = f[6], message = f[7] or ''} end
  local snap = {status = status or '',
                segments = {total = total, accepted = accepted, delivered = delivered,
                            failed = failed}}
  if carrier then snap.carrier = carrier end
  if err and not RECEIPT_OK[snap.status] then snap.error = err end
  if f[4] then snap.submitted_at = f[4] end
  local done = f[4]
  if tonumber(level) == 2 then done = f[5] end
  if done then snap.done_at = done end
  return cjson.encode(snap), f[8]
end
