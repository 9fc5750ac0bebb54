"""GSM 7-bit packing (TS 23.038 §6.1.2.1.1): septets LSB-first, fill bits, CR padding."""

from __future__ import annotations

from worker.encoding.alphabet import CR, ESC, Charset

_MAX_SEPTETS = 256  # more than one segment holds; the masks below cover this many
_FULL = 160  # septets in a whole TP-UD (140 octets), header septets included


def _compaction_steps() -> tuple[tuple[int, int, int], ...]:
    """Masks that squeeze 8-bit lanes into 7-bit groups, doubling the group size each step.

    Step k: lanes of 16·2^k bits hold two groups of 7·2^k bits at offsets 0 and 8·2^k; the
    high group moves down by 2^k bits to sit right after the low one.
    """
    total = 8 * _MAX_SEPTETS
    steps = []
    k = 0
    while 8 << k < total:
        lane, group = 16 << k, 7 << k
        lo = hi = 0
        for base in range(0, total, lane):
            lo |= ((1 << group) - 1) << base
            hi |= ((1 << group) - 1) << (base + lane // 2)
        steps.append((lo, hi, 1 << k))
        k += 1
    return tuple(steps)


_STEPS = _compaction_steps()


def header_septets(udh: int) -> int:
    """Septets taken by a UDH of `udh` octets plus its fill bits."""
    return (8 * udh + 6) // 7


def pad(septets: bytes, header: int, ends_with_cr: bool) -> bytes:
    """Add the CR padding of TS 23.038 §6.1.2.3.1 to one segment's septets.

    With 7 spare bits in the last octet a receiver that counts octets would read a phantom '@',
    so a CR fills them. A text that itself ends in CR on an octet boundary gets a second CR, so
    that a receiver stripping the padding CR keeps the wanted one. A full segment has no room
    for it (and no spare bits).
    """
    total = header + len(septets)
    if total % 8 == 7 or (total % 8 == 0 and ends_with_cr and total < _FULL):
        return septets + bytes((CR,))
    return septets


def pack(septets: bytes, fill: int) -> bytes:
    """Pack septets LSB-first after `fill` zero bits; the last octet's spare bits are zero."""
    count = len(septets)
    if count > _MAX_SEPTETS:
        raise ValueError(f"{count} septets are more than one segment holds")
    x = int.from_bytes(septets, "little")
    span = 1  # septets per group so far
    for lo, hi, shift in _STEPS:
        if span >= count:
            break
        x = (x & lo) | ((x & hi) >> shift)
        span <<= 1
    return (x << fill).to_bytes((fill + 7 * count + 7) // 8, "little")


def unpack(payload: bytes, fill: int, count: int | None) -> bytes:
    """The septets of a payload that starts with `fill` bits; `count` None strips CR padding."""
    bits = 8 * len(payload) - fill
    available = max(bits, 0) // 7
    if count is not None and not 0 <= count <= available:
        raise ValueError(f"payload holds {available} septets, not {count}")
    x = int.from_bytes(payload, "little") >> fill
    out = bytes((x >> (7 * i)) & 0x7F for i in range(available if count is None else count))
    if count is None and out:
        spare = bits - 7 * len(out)
        # Undo `pad`: a CR in what were 7 spare bits, or the second of two CRs on a boundary.
        if (spare == 0 and out[-1] == CR) or (spare == 1 and out[-2:] == b"\r\r"):
            out = out[:-1]
    return out


def to_text(septets: bytes, charset: Charset) -> str:
    """Decode septets with a charset; ESC + an unknown code shows the base character."""
    locking, single = charset.locking_table, charset.single_table
    chars: list[str] = []
    escaped = False
    for code in septets:
        if escaped:
            # ESC ESC is reserved for a further extension table: shown as a space.
            chars.append(" " if code == ESC else single.get(code, locking[code]))
            escaped = False
        elif code == ESC:
            escaped = True
        else:
            chars.append(locking[code])
    if escaped:
        raise ValueError("septets end in a lone escape")
    return "".join(chars)
