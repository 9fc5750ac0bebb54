"""The store's atomic steps, as Lua scripts run inside Redis (one round trip, no races)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

# Message states after which nothing changes (mirrors contract.FINAL_STATUSES).
_FINAL = (
    "local FINAL = {rejected=1, delivered=1, undelivered=1, expired=1, failed=1, cancelled=1}\n"
)

TRANSITION = (
    _FINAL
    + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
for i = 4, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[3])
    if FINAL[ARGV[1]] then redis.call('HSET', KEYS[1], 'done_at', ARGV[3]) end
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

CLAIM_SEGMENT = """
local f = ARGV[1] .. ':status'
local s = redis.call('HGET', KEYS[1], f)
if s and s ~= 'pending' then return 0 end
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

# Submission outcome over all segments: rejected > failed > accepted; nil while any is open.
FINISH_SUBMISSION = (
    _FINAL
    + """
local total = tonumber(ARGV[1])
local outcome = 'accepted'
for seq = 1, total do
  local s = redis.call('HGET', KEYS[2], seq .. ':status')
  if s == 'rejected' then outcome = 'rejected'
  elseif (s == 'failed' or s == 'unknown') and outcome ~= 'rejected' then outcome = 'failed'
  elseif s == nil or s == false or s == 'pending' or s == 'submitting' then return false
  end
end
if redis.call('HSETNX', KEYS[1], 'submit_outcome', outcome) == 1 then
  redis.call('HSET', KEYS[1], 'submitted_at', ARGV[2])
  local cur = redis.call('HGET', KEYS[1], 'status')
  if not FINAL[cur] then
    redis.call('HSET', KEYS[1], 'status', outcome, 'updated_at', ARGV[2])
    if FINAL[outcome] then redis.call('HSET', KEYS[1], 'done_at', ARGV[2]) end
    redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(ARGV[2]), event = outcome}))
  end
end
return redis.call('HGET', KEYS[1], 'submit_outcome')
"""
)

APPLY_RECEIPT = (
    _FINAL
    + """
local seq, new = ARGV[1], ARGV[2]
local f = seq .. ':status'
local cur = redis.call('HGET', KEYS[2], f) or 'pending'
local changed = 0
if not FINAL[cur] then
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
local mstatus = redis.call('HGET', KEYS[1], 'status')
if changed == 0 or FINAL[mstatus] then return {changed, mstatus, 0} end
local total = tonumber(redis.call('HGET', KEYS[1], 'segments') or '0')
local undelivered, expired = false, false
for i = 1, total do
  local s = redis.call('HGET', KEYS[2], i .. ':status')
  if s == 'undelivered' or s == 'rejected' or s == 'failed' then undelivered = true
  elseif s == 'expired' then expired = true
  elseif s ~= 'delivered' then return {changed, mstatus, 0}
  end
end
local final = 'delivered'
if undelivered then final = 'undelivered' elseif expired then final = 'expired' end
redis.call('HSET', KEYS[1], 'status', final, 'done_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(ARGV[5]), event = final}))
return {changed, final, 1}
"""
)

OPEN_RECEIPT = """
return redis.call('HSETNX', KEYS[1], 'rcpt:' .. ARGV[1] .. ':state', 'open')
"""

# Returns the receipt's seq when the caller may send it now, 0 when someone else has it or it is
# done, -1 when it is parked until the level-1 receipt of the same message is done.
CLAIM_RECEIPT = """
local lvl, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local sf = 'rcpt:' .. lvl .. ':state'
local st = redis.call('HGET', KEYS[1], sf)
if st == 'sent' or st == 'gone' or st == 'dead' then return 0 end
if st == 'sending' then
  local until_ms = tonumber(redis.call('HGET', KEYS[1], 'rcpt:' .. lvl .. ':lease') or '0')
  if until_ms > now then return 0 end
end
if lvl == '2' and redis.call('HGET', KEYS[1], 'dlr_level') == '3' then
  local s1 = redis.call('HGET', KEYS[1], 'rcpt:1:state')
  if s1 ~= 'sent' and s1 ~= 'gone' and s1 ~= 'dead' then
    redis.call('HSET', KEYS[1], sf, 'waiting')
    return -1
  end
end
redis.call('HSET', KEYS[1], sf, 'sending', 'rcpt:' .. lvl .. ':lease', now + lease)
local seq = redis.call('HGET', KEYS[1], 'rcpt:' .. lvl .. ':seq')
if not seq then
  seq = redis.call('HINCRBY', KEYS[1], 'rcpt:seq', 1)
  redis.call('HSET', KEYS[1], 'rcpt:' .. lvl .. ':seq', seq)
end
return tonumber(seq)
"""

RELEASE_RECEIPT = """
local sf = 'rcpt:' .. ARGV[1] .. ':state'
if redis.call('HGET', KEYS[1], sf) == 'sending' then
  redis.call('HSET', KEYS[1], sf, 'open', 'rcpt:' .. ARGV[1] .. ':lease', 0)
end
return 1
"""

# Returns 1 when closing level 1 releases a parked level-2 receipt (the caller enqueues it).
CLOSE_RECEIPT = """
redis.call('HSET', KEYS[1], 'rcpt:' .. ARGV[1] .. ':state', ARGV[2])
if ARGV[1] == '1' and redis.call('HGET', KEYS[1], 'rcpt:2:state') == 'waiting' then
  redis.call('HSET', KEYS[1], 'rcpt:2:state', 'open')
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one Redis client."""

    transition: Script
    concat_reference: Script
    claim_segment: Script
    release_segment: Script
    finish_submission: Script
    apply_receipt: Script
    open_receipt: Script
    claim_receipt: Script
    release_receipt: Script
    close_receipt: Script


def load(client: redis.Redis) -> Scripts:
    """Register every script on `client` (EVALSHA with a transparent EVAL fallback)."""
    return Scripts(
        transition=client.register_script(TRANSITION),
        concat_reference=client.register_script(CONCAT_REFERENCE),
        claim_segment=client.register_script(CLAIM_SEGMENT),
        release_segment=client.register_script(RELEASE_SEGMENT),
        finish_submission=client.register_script(FINISH_SUBMISSION),
        apply_receipt=client.register_script(APPLY_RECEIPT),
        open_receipt=client.register_script(OPEN_RECEIPT),
        claim_receipt=client.register_script(CLAIM_RECEIPT),
        release_receipt=client.register_script(RELEASE_RECEIPT),
        close_receipt=client.register_script(CLOSE_RECEIPT),
    )
