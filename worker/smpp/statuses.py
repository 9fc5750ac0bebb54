"""What a `submit_sm_resp`'s command_status means for the segment, and how it is written.

- throttled (0x58 ESME_RTHROTTLED, 0x14 ESME_RMSGQFUL): the SMSC is busy, not the message at
  fault: the bind pauses and the segment is sent again later, never failed for it;
- transient (0x08 ESME_RSYSERR, 0x64 ESME_RX_T_APPN, a generic_nack): sent again with backoff,
  a few times;
- every other non-zero status is permanent: the segment is `rejected`, the status its error
  code (`0x0000000B`), which the level-1 receipt carries.
"""

from __future__ import annotations

from enum import Enum

from worker.smpp.pdu import Status

THROTTLED = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})
TRANSIENT = frozenset({Status.RSYSERR, Status.RX_T_APPN})
# Bind answers after which a new bind at once is pointless: wrong credentials.
AUTH_FAILURES = frozenset({Status.RINVPASWD, Status.RINVSYSID, Status.RBINDFAIL})

NAMES = {
    0x01: "ESME_RINVMSGLEN", 0x03: "ESME_RINVCMDID", 0x04: "ESME_RINVBNDSTS",
    0x05: "ESME_RALYBND", 0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR", 0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD",
    0x0F: "ESME_RINVSYSID", 0x14: "ESME_RMSGQFUL", 0x43: "ESME_RINVESMCLASS",
    0x45: "ESME_RSUBMITFAIL", 0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON", 0x51: "ESME_RINVDSTNPI", 0x58: "ESME_RTHROTTLED",
    0x62: "ESME_RINVEXPIRY", 0x64: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN",
    0x66: "ESME_RX_R_APPN",
}  # fmt: skip


class Verdict(Enum):
    """What the connector does with a segment after the SMSC's answer."""

    ACCEPTED = "accepted"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    REJECTED = "rejected"


def verdict(status: int, *, nack: bool = False) -> Verdict:
    """The verdict of a `submit_sm_resp` status (`nack`: the answer was a generic_nack)."""
    if nack:
        return Verdict.THROTTLED if status in THROTTLED else Verdict.TRANSIENT
    if status == Status.ROK:
        return Verdict.ACCEPTED
    if status in THROTTLED:
        return Verdict.THROTTLED
    if status in TRANSIENT:
        return Verdict.TRANSIENT
    return Verdict.REJECTED


def error_code(status: int) -> str:
    """The status as the segment's error code: `0x` and eight hex digits, as Kannel writes it."""
    return f"0x{status:08X}"


def describe(status: int) -> str:
    """A short human reason: `ESME_RINVDSTADR (0x0000000B)`."""
    name = NAMES.get(status, "vendor-specific" if 0x400 <= status <= 0x4FF else "SMPP status")
    return f"{name} ({error_code(status)})"
