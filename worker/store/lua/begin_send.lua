-- The start of a send, in one round trip: load the message; unless it is final or its validity
-- ran out, move it from queued or scheduled to submitting and, for a concatenated message,
-- fix its concatenation reference (as `concat_reference.lua`, fresh per recipient).
--
-- KEYS: message hash, events list, submit watch, delivery watch.
-- ARGV: now (ms), the `submitting` event (JSON), reference modulus, counter TTL (s), counter
-- key prefix (the counter is `{prefix}{to}`, named from the message: the only key a script
-- builds itself, so messages and their recipients' counters must share one Redis).
-- Returns {'final' | 'expired', fields} (nothing changed), {'started', fields}, or nil for an
-- unknown message; fields are the message hash as a flat list, after the changes.
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local m = {}
for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
if FINAL[m['status']] then return {'final', h} end
local valid = tonumber(m['validity_until'] or '')
if valid and tonumber(ARGV[1]) > valid then return {'expired', h} end
local set = {}
if m['status'] == 'queued' or m['status'] == 'scheduled' then
  m['status'], m['updated_at'] = 'submitting', ARGV[1]
  set = {'status', 'submitting', 'updated_at', ARGV[1]}
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
if not m['concat_ref'] and (tonumber(m['segments'] or '0') or 0) > 1 then
  local counter = ARGV[5] .. (m['to'] or '')
  local n = redis.call('INCR', counter)
  redis.call('EXPIRE', counter, ARGV[4])
  m['concat_ref'] = tostring(n % tonumber(ARGV[3]))
  set[#set + 1] = 'concat_ref'
  set[#set + 1] = m['concat_ref']
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
h = {}
for k, v in pairs(m) do
  h[#h + 1] = k
  h[#h + 1] = tostring(v)
end
return {'started', h}
