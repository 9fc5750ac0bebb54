"""The User Data Header (TS 23.040 §9.2.3.24): concatenation and national language IEs."""

from __future__ import annotations

from dataclasses import dataclass, replace

IEI_CONCAT_8 = 0x00  # reference, total, sequence (3 octets)
IEI_CONCAT_16 = 0x08  # 16-bit reference, total, sequence (4 octets)
IEI_SINGLE_SHIFT = 0x24  # national language single shift table id (1 octet)
IEI_LOCKING_SHIFT = 0x25  # national language locking shift table id (1 octet)


def concat_ie(reference: int, reference_bits: int, total: int, seq: int) -> bytes:
    """The concatenation IE: `00 03 ref total seq` or `08 04 refhi reflo total seq`."""
    if reference_bits == 16:
        return bytes((IEI_CONCAT_16, 4, reference >> 8, reference & 0xFF, total, seq))
    return bytes((IEI_CONCAT_8, 3, reference, total, seq))


def build(ies: bytes) -> bytes:
    """A UDH from its information elements: the UDHL octet, then the IEs; b"" when none."""
    return bytes((len(ies),)) + ies if ies else b""


@dataclass(frozen=True, slots=True)
class Header:
    """What a UDH says about its segment."""

    reference: int | None = None
    total: int = 1
    seq: int = 1
    locking: int = 0
    single: int = 0


def parse(udh: bytes) -> Header:
    """Read a UDH (UDHL included); unknown IEs are skipped, a malformed one raises ValueError."""
    if not udh:
        return Header()
    if udh[0] != len(udh) - 1:
        raise ValueError(f"UDHL {udh[0]} does not match a {len(udh)}-octet header")
    header = Header()
    pos = 1
    while pos < len(udh):
        if pos + 2 > len(udh) or pos + 2 + udh[pos + 1] > len(udh):
            raise ValueError(f"information element at octet {pos} runs past the header")
        iei, data = udh[pos], udh[pos + 2 : pos + 2 + udh[pos + 1]]
        header = replace(header, **_read_ie(iei, data))
        pos += 2 + len(data)
    return header


_IE_SIZES = {IEI_CONCAT_8: 3, IEI_CONCAT_16: 4, IEI_SINGLE_SHIFT: 1, IEI_LOCKING_SHIFT: 1}


def _read_ie(iei: int, data: bytes) -> dict[str, int]:
    size = _IE_SIZES.get(iei)
    if size is None:
        return {}  # an IE we do not use (ports, indications…): a receiver skips it too
    if len(data) != size:
        raise ValueError(f"IE 0x{iei:02x} has {len(data)} octets, not {size}")
    if iei == IEI_SINGLE_SHIFT:
        return {"single": data[0]}
    if iei == IEI_LOCKING_SHIFT:
        return {"locking": data[0]}
    reference = int.from_bytes(data[:-2], "big")
    return {"reference": reference, "total": data[-2], "seq": data[-1]}
