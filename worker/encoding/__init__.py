"""GSM 03.38 / UCS-2 encoding and segmentation of SMS text: pure functions, no I/O.

    summarize(text, coding)         encoding, segment count, characters (fast, nothing packed)
    encode_message(text, coding)    the segments: UDH, payload, data coding, text
    decode_segment / reassemble     the way back, as a handset reads it
    next_reference(previous, bits)  the concatenation reference after `previous`

`characters` counts the code points of the text sent. Pipeline: classify, smart-encode
(opt-in), choose charset (national tables opt-in), cut, build UDH, pack.
"""

from worker.encoding.alphabet import is_gsm7
from worker.encoding.decoding import DecodedSegment, decode_segment, reassemble
from worker.encoding.message import (
    EncodedMessage,
    Segment,
    Summary,
    encode_message,
    next_reference,
    summarize,
)
from worker.encoding.plan import Coding, Encoding, ReferenceBits, normalize_coding

__all__ = [
    "Coding",
    "DecodedSegment",
    "EncodedMessage",
    "Encoding",
    "ReferenceBits",
    "Segment",
    "Summary",
    "decode_segment",
    "encode_message",
    "is_gsm7",
    "next_reference",
    "normalize_coding",
    "reassemble",
    "summarize",
]
