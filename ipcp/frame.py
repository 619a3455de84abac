"""The PPP frame inside the HDLC-like framing: Address/Control and Protocol (RFC 1661 section 2, RFC 1662).

A receiver accepts every form a peer may send, whatever was negotiated: with or without ``FF 03``
(ACFC) and with a one- or two-octet Protocol field (PFC). A sender compresses only what the peer
asked for, and never the header of an LCP packet -- RFC 1662 section 3.2: "The Address and Control
fields MUST NOT be compressed when sending any LCP packet".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from options.errors import DecodeError
from options.wire import Reader

__all__ = ["ADDRESS_CONTROL", "Frame", "Protocol", "decode_frame", "encode_frame", "is_valid_protocol"]

ADDRESS_CONTROL: Final = b"\xff\x03"


class Protocol(IntEnum):
    IPV4 = 0x0021
    IPCP = 0x8021
    LCP = 0xC021
    PAP = 0xC023
    CHAP = 0xC223
    CCP = 0x80FD
    IPV6CP = 0x8057


def is_valid_protocol(protocol: int) -> bool:
    """RFC 1661 section 2: the low octet is odd and the high octet even."""
    return 0 <= protocol <= 0xFFFF and protocol & 0x0001 == 1 and protocol & 0x0100 == 0


@dataclass(frozen=True, slots=True)
class Frame:
    """Protocol number and Information (+ padding): what one PPP frame carries."""

    protocol: int
    information: bytes = b""

    def __post_init__(self) -> None:
        if not is_valid_protocol(self.protocol):
            raise ValueError(f"{self.protocol:#06x} is not a valid PPP protocol number")


def encode_frame(frame: Frame, *, acfc: bool = False, pfc: bool = False) -> bytes:
    """Address/Control (unless ``acfc`` and not LCP), Protocol (one octet if ``pfc`` and it fits)."""
    head = b"" if acfc and frame.protocol != Protocol.LCP else ADDRESS_CONTROL
    # 0x00FF stays two octets: compressed, it would read as an Address field of FF.
    proto = frame.protocol.to_bytes(1 if pfc and frame.protocol < 0xFF else 2, "big")
    return head + proto + frame.information


def decode_frame(buf: bytes, start: int = 0) -> Frame:
    """A frame without its FCS. An Address of FF must be followed by Control 03 (RFC 1662 section 3.1)."""
    r = Reader(buf, start)
    first = r.pull_u8("address or protocol")
    if first == 0xFF:
        control = r.pull_u8("control")
        if control != 0x03:
            raise DecodeError(f"control field {control:#04x} is not 0x03 (UI)", r.offset - 1)
        first = r.pull_u8("protocol")
    at = r.offset - 1
    if first & 1:
        protocol = first
    else:
        protocol = (first << 8) | r.pull_u8("protocol low octet")
        if not protocol & 1:
            raise DecodeError(f"protocol {protocol:#06x} has an even low octet", at)
    return Frame(protocol, r.pull_rest())
