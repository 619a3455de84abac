"""LCP-style control packets (RFC 1661 section 5), shared by LCP and the NCPs such as IPCP.

``Code(1) Identifier(1) Length(2) Data``. RFC 1661: "Octets outside the range of the Length field
are treated as padding and are ignored on reception" -- so trailing bytes are not an error, but a
Length below 4 or beyond the bytes received is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

from ipcp.option import Option, OptionRegistry, encode_options
from options.errors import DecodeError
from options.wire import Reader

__all__ = [
    "HEADER_SIZE",
    "LCP_CODES",
    "NCP_CODES",
    "Code",
    "CodeReject",
    "ConfigureAck",
    "ConfigureNak",
    "ConfigurePacket",
    "ConfigureReject",
    "ConfigureRequest",
    "DiscardRequest",
    "EchoReply",
    "EchoRequest",
    "MagicPacket",
    "Packet",
    "PacketHeader",
    "ProtocolReject",
    "TerminateAck",
    "TerminateRequest",
    "UnknownCodePacket",
    "decode_header",
    "decode_packet",
]

HEADER_SIZE: Final = 4


class Code(IntEnum):
    CONFIGURE_REQUEST = 1
    CONFIGURE_ACK = 2
    CONFIGURE_NAK = 3
    CONFIGURE_REJECT = 4
    TERMINATE_REQUEST = 5
    TERMINATE_ACK = 6
    CODE_REJECT = 7
    PROTOCOL_REJECT = 8
    ECHO_REQUEST = 9
    ECHO_REPLY = 10
    DISCARD_REQUEST = 11


LCP_CODES: Final = frozenset(Code)
NCP_CODES: Final = frozenset(range(Code.CONFIGURE_REQUEST, Code.CODE_REJECT + 1))
"""RFC 1332 section 2: IPCP uses "exactly the same" mechanism as LCP, with codes 1 through 7 only."""


def _check_identifier(identifier: int) -> None:
    if not 0 <= identifier <= 0xFF:
        raise ValueError(f"identifier {identifier} is not an octet")


class Packet:
    """Base of every control packet value."""

    __slots__ = ()
    identifier: int
    CODE: ClassVar[int]

    @property
    def code(self) -> int:
        return self.CODE

    def encode_data(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        data = self.encode_data()
        return bytes((self.code, self.identifier)) + (len(data) + HEADER_SIZE).to_bytes(2, "big") + data


@dataclass(frozen=True, slots=True)
class ConfigurePacket(Packet):
    """Configure-Request/Ack/Nak/Reject: an identifier and a list of options in wire order."""

    CODE: ClassVar[Code] = Code.CONFIGURE_REQUEST
    identifier: int
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)

    def encode_data(self) -> bytes:
        return encode_options(self.options)


@dataclass(frozen=True, slots=True)
class ConfigureRequest(ConfigurePacket):
    CODE: ClassVar[Code] = Code.CONFIGURE_REQUEST


@dataclass(frozen=True, slots=True)
class ConfigureAck(ConfigurePacket):
    CODE: ClassVar[Code] = Code.CONFIGURE_ACK


@dataclass(frozen=True, slots=True)
class ConfigureNak(ConfigurePacket):
    CODE: ClassVar[Code] = Code.CONFIGURE_NAK


@dataclass(frozen=True, slots=True)
class ConfigureReject(ConfigurePacket):
    CODE: ClassVar[Code] = Code.CONFIGURE_REJECT


@dataclass(frozen=True, slots=True)
class TerminateRequest(Packet):
    CODE: ClassVar[Code] = Code.TERMINATE_REQUEST
    identifier: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)

    def encode_data(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class TerminateAck(TerminateRequest):
    CODE: ClassVar[Code] = Code.TERMINATE_ACK


@dataclass(frozen=True, slots=True)
class CodeReject(Packet):
    """Carries the rejected packet (its Information field, truncated to fit the peer's MRU)."""

    CODE: ClassVar[Code] = Code.CODE_REJECT
    identifier: int
    rejected_packet: bytes

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)

    def encode_data(self) -> bytes:
        return self.rejected_packet


@dataclass(frozen=True, slots=True)
class ProtocolReject(Packet):
    """LCP only: ``Rejected-Protocol(2)`` then the rejected Information field."""

    CODE: ClassVar[Code] = Code.PROTOCOL_REJECT
    identifier: int
    rejected_protocol: int
    rejected_information: bytes = b""

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)
        if not 0 <= self.rejected_protocol <= 0xFFFF:
            raise ValueError(f"protocol {self.rejected_protocol:#x} does not fit 16 bits")

    def encode_data(self) -> bytes:
        return self.rejected_protocol.to_bytes(2, "big") + self.rejected_information


@dataclass(frozen=True, slots=True)
class MagicPacket(Packet):
    """Echo-Request/Echo-Reply/Discard-Request: ``Magic-Number(4)`` then opaque data (LCP only)."""

    CODE: ClassVar[Code] = Code.ECHO_REQUEST
    identifier: int
    magic: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)
        if not 0 <= self.magic <= 0xFFFFFFFF:
            raise ValueError(f"magic number {self.magic:#x} does not fit 32 bits")

    def encode_data(self) -> bytes:
        return self.magic.to_bytes(4, "big") + self.data


@dataclass(frozen=True, slots=True)
class EchoRequest(MagicPacket):
    CODE: ClassVar[Code] = Code.ECHO_REQUEST


@dataclass(frozen=True, slots=True)
class EchoReply(MagicPacket):
    CODE: ClassVar[Code] = Code.ECHO_REPLY


@dataclass(frozen=True, slots=True)
class DiscardRequest(MagicPacket):
    CODE: ClassVar[Code] = Code.DISCARD_REQUEST


@dataclass(frozen=True, slots=True)
class UnknownCodePacket(Packet):
    """A code this protocol does not define: the automaton answers it with Code-Reject (RUC)."""

    unknown_code: int
    identifier: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)
        if not 0 <= self.unknown_code <= 0xFF:
            raise ValueError(f"code {self.unknown_code} is not an octet")

    @property
    def code(self) -> int:
        return self.unknown_code

    def encode_data(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class PacketHeader:
    """A packet's header and where its Data field lies in the buffer (padding excluded)."""

    code: int
    identifier: int
    data_start: int
    data_end: int


def decode_header(buf: bytes, start: int = 0) -> PacketHeader:
    r = Reader(buf, start)
    code = r.pull_u8("code")
    identifier = r.pull_u8("identifier")
    length = r.pull_u16("length")
    if length < HEADER_SIZE:
        raise DecodeError(f"packet length {length} is below the {HEADER_SIZE}-octet header", start + 2)
    if length > len(buf) - start:
        raise DecodeError(f"packet length {length} exceeds the {len(buf) - start} octets received", start + 2)
    return PacketHeader(code, identifier, start + HEADER_SIZE, start + length)


_CONFIGURE: Final[dict[int, type[ConfigurePacket]]] = {
    cls.CODE: cls for cls in (ConfigureRequest, ConfigureAck, ConfigureNak, ConfigureReject)
}
_TERMINATE: Final[dict[int, type[TerminateRequest]]] = {
    cls.CODE: cls for cls in (TerminateRequest, TerminateAck)
}
_MAGIC: Final[dict[int, type[MagicPacket]]] = {
    cls.CODE: cls for cls in (EchoRequest, EchoReply, DiscardRequest)
}


def decode_packet(
    buf: bytes, registry: OptionRegistry, *, codes: frozenset[int] = LCP_CODES, start: int = 0
) -> Packet:
    """One control packet of ``buf[start:]``; codes outside ``codes`` become :class:`UnknownCodePacket`.

    Strict about options: a Configure packet whose options do not frame or decode raises
    DecodeError (an engine that wants per-option tolerance uses ``OptionRegistry.decode_each``).
    """
    h = decode_header(buf, start)
    if h.code not in codes or h.code not in LCP_CODES:
        return UnknownCodePacket(h.code, h.identifier, buf[h.data_start : h.data_end])
    configure = _CONFIGURE.get(h.code)
    if configure is not None:
        return configure(h.identifier, registry.decode(buf, h.data_start, h.data_end))
    terminate = _TERMINATE.get(h.code)
    if terminate is not None:
        return terminate(h.identifier, buf[h.data_start : h.data_end])
    r = Reader(buf, h.data_start, h.data_end)
    if h.code == Code.CODE_REJECT:
        return CodeReject(h.identifier, r.pull_rest())
    if h.code == Code.PROTOCOL_REJECT:
        protocol = r.pull_u16("rejected protocol")
        return ProtocolReject(h.identifier, protocol, r.pull_rest())
    magic = _MAGIC[h.code]
    number = r.pull_u32("magic number")
    return magic(h.identifier, number, r.pull_rest())
