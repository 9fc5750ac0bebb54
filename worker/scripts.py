"""The store's atomic steps, as Lua scripts run inside Redis (one round trip, no races).

Besides the message and its segments, the scripts keep the reconciler's watch lists (sorted
sets scored by the time progress is due, `worker.store` names them) in step with every state
change, so that no crash between two writes can leave a message or receipt unwatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

from worker.store.lua_scripts import prelude, read

# The contract's state names (FINAL, ...), rendered from its enums.
_FINAL = prelude()

# Open the client receipt of a level once: its state, its content fixed now (the snapshot
# every attempt sends), and a place on the receipt watch list.
_OPEN = read("snapshot") + read("open_receipt")


def _as_function(name: str, script: str) -> str:
    """A script as a local Lua function of another one (`KEYS`/`ARGV` passed as arguments)."""
    return f"local function {name}(KEYS, ARGV)\n{script}\nend\n"


# KEYS: msg, events, submit watch, delivery watch. ARGV: to, event, now, allowed from...
TRANSITION = (
    _FINAL
    + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
for i = 4, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[3])
    if FINAL[ARGV[1]] then
      redis.call('HSET', KEYS[1], 'done_at', ARGV[3])
      local id = redis.call('HGET', KEYS[1], 'id')
      if KEYS[3] then redis.call('ZREM', KEYS[3], id) end
      if KEYS[4] then redis.call('ZREM', KEYS[4], id) end
    end
    redis.call('RPUSH', KEYS[2], ARGV[2])
    return 1
  end
end
return 0
"""
)

CONCAT_REFERENCE = """
local ref = redis.call('HGET', KEYS[1], 'concat_ref')
if ref then return tonumber(ref) end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
ref = n % tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'concat_ref', ref)
return ref
"""

# A pending segment, or (ARGV[3] = '1', the carrier honours client references) one whose
# outcome is unknown: resent with the same client reference, the carrier answers it once.
CLAIM_SEGMENT = """
local f = ARGV[1] .. ':status'
local s = redis.call('HGET', KEYS[1], f)
if s and s ~= 'pending' and not (s == 'unknown' and ARGV[3] == '1') then return 0 end
redis.call('HSET', KEYS[1], f, 'submitting', ARGV[1] .. ':submitted_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':attempts', 1)
return 1
"""

RELEASE_SEGMENT = """
local f = ARGV[1] .. ':status'
if redis.call('HGET', KEYS[1], f) ~= 'submitting' then return 0 end
redis.call('HSET', KEYS[1], f, 'pending', ARGV[1] .. ':error_code', ARGV[2],
           ARGV[1] .. ':error_message', ARGV[3])
return 1
"""

# KEYS: segments, carrier index, parked receipts of that carrier id. ARGV: seq, carrier id,
# carrier, `{id}:{seq}`, index TTL, state (`accepted`; `sent` when only a gateway took it and
# the SMSC's answer comes as a receipt). The carrier took the segment: indexed, and in that
# state unless a receipt (or another run) already moved it on (a segment never goes
# backwards). Returns {1 if recorded now, receipts parked for it}.
RECORD_ACCEPTED = """
local seq = ARGV[1]
redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[5]))
local parked = redis.call('LRANGE', KEYS[3], 0, -1)
if #parked > 0 then redis.call('DEL', KEYS[3]) end
local s = redis.call('HGET', KEYS[1], seq .. ':status')
if s and s ~= 'pending' and s ~= 'submitting' and s ~= 'unknown' then return {0, parked} end
redis.call('HSET', KEYS[1], seq .. ':status', ARGV[6], seq .. ':carrier_id', ARGV[2],
           seq .. ':carrier', ARGV[3], seq .. ':error_code', '', seq .. ':error_message', '')
return {1, parked}
"""

# KEYS: carrier index, parked receipts. A receipt for a carrier id not (yet) indexed waits
# for `RECORD_ACCEPTED` of that id; if the id was indexed meanwhile, returns its segment.
PARK_RECEIPT = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return false
"""

# KEYS: segments, message, counters. ARGV: seq, claimed before ('' = any time), error code,
# message, now, counter. A claimed segment whose request left without an answer (or whose
# claim is older than the lease: the run holding it died) becomes `unknown`, and is counted.
MARK_UNKNOWN = """
local seq = ARGV[1]
if redis.call('HGET', KEYS[1], seq .. ':status') ~= 'submitting' then return 0 end
local claimed = tonumber(redis.call('HGET', KEYS[1], seq .. ':submitted_at') or '0')
if ARGV[2] ~= '' and claimed > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], seq .. ':status', 'unknown', seq .. ':error_code', ARGV[3],
           seq .. ':error_message', ARGV[4], seq .. ':done_at', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'unknown_outcomes', 1)
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
return 1
"""

# KEYS: msg, segments, events, submit watch, delivery watch, receipt watch.
# The submission outcome over all segments (rejected > failed > accepted; nil while any is
# open: pending, submitting, or sent and awaiting the SMSC's answer), set once; the first
# caller also opens the level-1 receipt (or, for a final outcome with level 2 only, the
# level-2 one). Returns {outcome, opened level or 0}.
FINISH_SUBMISSION = (
    _FINAL
    + _OPEN
    + """
local total, now = tonumber(ARGV[1]), ARGV[2]
local outcome = 'accepted'
for seq = 1, total do
  local s = redis.call('HGET', KEYS[2], seq .. ':status')
  if s == 'rejected' then outcome = 'rejected'
  elseif (s == 'failed' or s == 'unknown') and outcome ~= 'rejected' then outcome = 'failed'
  elseif not s or s == 'pending' or s == 'submitting' or s == 'sent' then return false
  end
end
local opened = 0
if redis.call('HSETNX', KEYS[1], 'submit_outcome', outcome) == 1 then
  local id = redis.call('HGET', KEYS[1], 'id')
  redis.call('HSET', KEYS[1], 'submitted_at', now)
  redis.call('ZREM', KEYS[4], id)
  local cur = redis.call('HGET', KEYS[1], 'status')
  if not FINAL[cur] then
    redis.call('HSET', KEYS[1], 'status', outcome, 'updated_at', now)
    if FINAL[outcome] then redis.call('HSET', KEYS[1], 'done_at', now)
    else redis.call('ZADD', KEYS[5], now, id) end
    redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(now), event = outcome}))
  end
  if redis.call('HGET', KEYS[1], 'dlr') == '1' then
    local level = redis.call('HGET', KEYS[1], 'dlr_level') or '1'
    if level == '1' or level == '3' then opened = open_receipt(KEYS[1], KEYS[2], KEYS[6], 1, now)
    elseif FINAL[outcome] then opened = open_receipt(KEYS[1], KEYS[2], KEYS[6], 2, now) end
  end
end
return {redis.call('HGET', KEYS[1], 'submit_outcome'), opened}
"""
)

# KEYS: msg, segments, events, delivery watch, receipt watch, submit watch. ARGV: seq, state,
# error code, error message, now. A carrier receipt for one segment; the message becomes final
# once, and then opens its level-2 receipt if wanted. A segment `sent` (its SMSC's answer
# pending) takes any receipt — an acceptance, a refusal, or a terminal one, which implies the
# SMSC took it — and then the submission may finish (FINISH_SUBMISSION, opening level 1); only
# a `sent` segment becomes `unknown` (the reconciler's verdict when no answer came in time).
# Returns {segment changed, message status, became final, opened level or 0, level opened
# by finishing the submission or 0}.
APPLY_RECEIPT = (
    _FINAL
    + _OPEN
    + _as_function("finish_submission", FINISH_SUBMISSION)
    + """
local seq, new = ARGV[1], ARGV[2]
local f = seq .. ':status'
local cur = redis.call('HGET', KEYS[2], f) or 'pending'
local changed = 0
if cur == 'sent' or (not FINAL[cur] and new ~= 'unknown') then
  if new == 'accepted' then
    if cur ~= 'accepted' then
      redis.call('HSET', KEYS[2], f, 'accepted'); changed = 1
    end
  else
    redis.call('HSET', KEYS[2], f, new, seq .. ':error_code', ARGV[3],
               seq .. ':error_message', ARGV[4], seq .. ':done_at', ARGV[5])
    changed = 1
  end
end
local was = redis.call('HGET', KEYS[1], 'status')
local submitted = 0
if changed == 1 and cur == 'sent' then
  local total = redis.call('HGET', KEYS[1], 'segments') or '0'
  local r = finish_submission({KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[4], KEYS[5]},
                              {total, ARGV[5]})
  if r then submitted = r[2] end
end
local mstatus = redis.call('HGET', KEYS[1], 'status')
if changed == 0 or FINAL[mstatus] then
  local ended = (FINAL[mstatus] and not FINAL[was]) and 1 or 0
  return {changed, mstatus, ended, 0, submitted}
end
local total = tonumber(redis.call('HGET', KEYS[1], 'segments') or '0')
local rejected, undelivered, expired = false, false, false
for i = 1, total do
  local s = redis.call('HGET', KEYS[2], i .. ':status')
  if s == 'rejected' then rejected = true
  elseif s == 'undelivered' or s == 'failed' then undelivered = true
  elseif s == 'expired' then expired = true
  elseif s ~= 'delivered' then return {changed, mstatus, 0, 0, submitted}
  end
end
local final = 'delivered'
if rejected then final = 'rejected'
elseif undelivered then final = 'undelivered'
elseif expired then final = 'expired' end
redis.call('HSET', KEYS[1], 'status', final, 'done_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(ARGV[5]), event = final}))
local opened = 0
local level = redis.call('HGET', KEYS[1], 'dlr_level') or '1'
if redis.call('HGET', KEYS[1], 'dlr') == '1' and (level == '2' or level == '3') then
  opened = open_receipt(KEYS[1], KEYS[2], KEYS[5], 2, ARGV[5])
end
return {changed, final, 1, opened, submitted}
"""
)

# KEYS: msg, segments, receipt watch. ARGV: level, now.
OPEN_RECEIPT = (
    _FINAL
    + _OPEN
    + """
return open_receipt(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]) ~= 0 and 1 or 0
"""
)

# KEYS: msg, receipt watch. Returns the receipt's seq when the caller may send it now, 0 when
# it is done, someone else has it or its next attempt is not due yet, -1 when it is parked
# until the level-1 receipt of the same message is done (which releases it).
CLAIM_RECEIPT = """
local lvl, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local p = 'rcpt:' .. lvl .. ':'
local st = redis.call('HGET', KEYS[1], p .. 'state')
if not st or st == 'sent' or st == 'gone' or st == 'dead' then return 0 end
if st == 'sending' and tonumber(redis.call('HGET', KEYS[1], p .. 'lease') or '0') > now then
  return 0
end
-- A second chain of retries (a republished task) must not run ahead of the scheduled one.
if tonumber(redis.call('HGET', KEYS[1], p .. 'not_before') or '0') > now + 1000 then return 0 end
if lvl == '2' and redis.call('HGET', KEYS[1], 'dlr_level') == '3' then
  local s1 = redis.call('HGET', KEYS[1], 'rcpt:1:state')
  if s1 ~= 'sent' and s1 ~= 'gone' and s1 ~= 'dead' then
    redis.call('HSET', KEYS[1], p .. 'state', 'waiting')
    return -1
  end
end
redis.call('HSET', KEYS[1], p .. 'state', 'sending', p .. 'lease', now + lease)
redis.call('ZADD', KEYS[2], now + lease, redis.call('HGET', KEYS[1], 'id') .. ':' .. lvl)
local seq = redis.call('HGET', KEYS[1], p .. 'seq')
if not seq then
  seq = redis.call('HINCRBY', KEYS[1], 'rcpt:seq', 1)
  redis.call('HSET', KEYS[1], p .. 'seq', seq)
end
return tonumber(seq)
"""

# KEYS: msg, receipt watch. ARGV: level, due (ms; 0 = now). After a failed attempt.
RELEASE_RECEIPT = """
local p = 'rcpt:' .. ARGV[1] .. ':'
if redis.call('HGET', KEYS[1], p .. 'state') == 'sending' then
  redis.call('HSET', KEYS[1], p .. 'state', 'open', p .. 'lease', 0, p .. 'not_before', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], redis.call('HGET', KEYS[1], 'id') .. ':' .. ARGV[1])
end
return 1
"""

# KEYS: msg, receipt watch. ARGV: level, outcome, now. Returns 1 when closing level 1
# releases a parked level-2 receipt (the caller enqueues it).
CLOSE_RECEIPT = """
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'rcpt:' .. ARGV[1] .. ':state', ARGV[2])
redis.call('ZREM', KEYS[2], id .. ':' .. ARGV[1])
if ARGV[1] == '1' and redis.call('HGET', KEYS[1], 'rcpt:2:state') == 'waiting' then
  redis.call('HSET', KEYS[1], 'rcpt:2:state', 'open')
  redis.call('ZADD', KEYS[2], ARGV[3], id .. ':2')
  return 1
end
return 0
"""

# KEYS: msg, receipt watch, dead letters. ARGV: level, now. Send an opened receipt again
# (replay): a fresh retry schedule, the same event id and seq. 0 if it was never opened.
REPLAY_RECEIPT = """
local p = 'rcpt:' .. ARGV[1] .. ':'
if not redis.call('HGET', KEYS[1], p .. 'state') then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], p .. 'state', 'open', p .. 'lease', 0, p .. 'not_before', 0,
           p .. 'base', redis.call('HGET', KEYS[1], p .. 'attempts') or 0)
redis.call('HDEL', KEYS[1], p .. 'first_attempt_at')
redis.call('ZADD', KEYS[2], ARGV[2], id .. ':' .. ARGV[1])
redis.call('ZREM', KEYS[3], id .. ':' .. ARGV[1])
return 1
"""


# Cheaper sends (#9): the steps of a send that always run together, in one round trip each.
# They run the scripts above unchanged, as local functions (`_as_function`).
# KEYS: msg, events, submit watch, delivery watch. ARGV: now, the `submitting` event, reference
# modulus, counter TTL, counter key prefix (the key is `{prefix}{to}`, read from the message:
# smsq runs on one Redis, never a cluster). The start of a send: {'final' | 'expired', message}
# changes nothing; else queued/scheduled → submitting and the concatenation reference fixed,
# {'started', message}. Nil for an unknown message.
BEGIN_SEND = (
    _FINAL
    + _as_function("transition", TRANSITION)
    + _as_function("concat_reference", CONCAT_REFERENCE)
    + """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local m = {}
for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
if FINAL[m['status']] then return {'final', h} end
local v = tonumber(m['validity_until'] or '')
if v and tonumber(ARGV[1]) > v then return {'expired', h} end
if transition(KEYS, {'submitting', ARGV[2], ARGV[1], 'queued', 'scheduled'}) == 1 then
  m['status'], m['updated_at'] = 'submitting', ARGV[1]
end
m['concat_ref'] = concat_reference({KEYS[1], ARGV[5] .. (m['to'] or '')}, {ARGV[3], ARGV[4]})
h = {}
for k, v in pairs(m) do h[#h + 1] = k; h[#h + 1] = tostring(v) end
return {'started', h}
"""
)

# KEYS: msg, segments, events, submit watch, delivery watch, receipt watch, carrier index,
# parked receipts. ARGV: total, now, seq, carrier id, carrier, `{id}:{seq}`, index TTL, state.
# RECORD_ACCEPTED of the last segment, then FINISH_SUBMISSION, atomically; not finished when
# receipts were parked for the id (the caller applies them first, then finishes).
# Returns {accepted now, parked receipts} or {accepted now, parked, finish's answer or nil}.
ACCEPT_AND_FINISH = (
    _as_function("record_accepted", RECORD_ACCEPTED)
    + _as_function("finish_submission", FINISH_SUBMISSION)
    + """
local r = record_accepted({KEYS[2], KEYS[7], KEYS[8]},
                          {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]})
if #r[2] > 0 then return r end
return {r[1], r[2], finish_submission(KEYS, {ARGV[1], ARGV[2]})}
"""
)


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one Redis client."""

    transition: Script
    concat_reference: Script
    claim_segment: Script
    release_segment: Script
    record_accepted: Script
    park_receipt: Script
    mark_unknown: Script
    finish_submission: Script
    apply_receipt: Script
    open_receipt: Script
    claim_receipt: Script
    release_receipt: Script
    close_receipt: Script
    replay_receipt: Script
    begin_send: Script
    accept_and_finish: Script


def load(client: redis.Redis) -> Scripts:
    """Register every script on `client` (EVALSHA with a transparent EVAL fallback)."""
    return Scripts(
        transition=client.register_script(TRANSITION),
        concat_reference=client.register_script(CONCAT_REFERENCE),
        claim_segment=client.register_script(CLAIM_SEGMENT),
        release_segment=client.register_script(RELEASE_SEGMENT),
        record_accepted=client.register_script(RECORD_ACCEPTED),
        park_receipt=client.register_script(PARK_RECEIPT),
        mark_unknown=client.register_script(MARK_UNKNOWN),
        finish_submission=client.register_script(FINISH_SUBMISSION),
        apply_receipt=client.register_script(APPLY_RECEIPT),
        open_receipt=client.register_script(OPEN_RECEIPT),
        claim_receipt=client.register_script(CLAIM_RECEIPT),
        release_receipt=client.register_script(RELEASE_RECEIPT),
        close_receipt=client.register_script(CLOSE_RECEIPT),
        replay_receipt=client.register_script(REPLAY_RECEIPT),
        begin_send=client.register_script(BEGIN_SEND),
        accept_and_finish=client.register_script(ACCEPT_AND_FINISH),
    )
