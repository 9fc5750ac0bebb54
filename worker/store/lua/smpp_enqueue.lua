-- Queue one segment's submit_sm for an SMPP connector, at most once per segment.
--
-- KEYS: the lane's stream (`smsq:smpp:<carrier>:out:<lane>`), the segment's marker
-- (`smsq:smpp:{<stream key>}:ref:<ref>`: its hash tag is the stream's key, one slot for both).
-- ARGV: ref (`{message id}:{seq}`), the submit_sm body, the marker's ttl (ms).
-- The first call adds the entry and keeps its id in the marker; a repeat with the same ref
-- (a run that lost this script's reply, or died before storing the outcome, queues the segment
-- again) adds nothing and returns the first entry's id. Returns the entry id.
local first = redis.call('GET', KEYS[2])
if first then return first end
local id = redis.call('XADD', KEYS[1], '*', 'ref', ARGV[1], 'pdu', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
return id
