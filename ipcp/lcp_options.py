"""LCP Configuration Options (RFC 1661 section 6; ACFC/PFC framing in RFC 1662).

Authentication-Protocol and Quality-Protocol carry a protocol number and protocol-specific data:
both are kept raw (``data`` re-encodes identically), because this engine does not negotiate them --
it rejects them, and a Configure-Reject must copy them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

from ipcp.option import MAX_OPTION_DATA, Option, OptionRegistry
from options.wire import Reader

__all__ = [
    "DEFAULT_MRU",
    "LCP_OPTIONS",
    "AddressControlFieldCompression",
    "AsyncControlCharacterMap",
    "AuthenticationProtocol",
    "LcpOptionType",
    "MagicNumber",
    "MaximumReceiveUnit",
    "ProtocolFieldCompression",
    "QualityProtocol",
]

DEFAULT_MRU: Final = 1500


class LcpOptionType(IntEnum):
    MRU = 1
    ACCM = 2
    AUTHENTICATION_PROTOCOL = 3
    QUALITY_PROTOCOL = 4
    MAGIC_NUMBER = 5
    PROTOCOL_FIELD_COMPRESSION = 7
    ADDRESS_CONTROL_FIELD_COMPRESSION = 8


@dataclass(frozen=True, slots=True)
class MaximumReceiveUnit(Option):
    """MRU: ``01 04 <u16>``, the largest Information+Padding the sender of the request can receive."""

    TYPE: ClassVar[int] = LcpOptionType.MRU
    mru: int

    def __post_init__(self) -> None:
        if not 0 <= self.mru <= 0xFFFF:
            raise ValueError(f"MRU {self.mru} does not fit 16 bits")

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.mru.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class AsyncControlCharacterMap(Option):
    """ACCM (RFC 1662 section 7.1): bit n set means control character n must be escaped to the sender."""

    TYPE: ClassVar[int] = LcpOptionType.ACCM
    accm: int

    def __post_init__(self) -> None:
        if not 0 <= self.accm <= 0xFFFFFFFF:
            raise ValueError(f"ACCM {self.accm:#x} does not fit 32 bits")

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.accm.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class _ProtocolAndData(Option):
    protocol: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFFFF:
            raise ValueError(f"protocol {self.protocol:#x} does not fit 16 bits")
        if len(self.data) > MAX_OPTION_DATA - 2:
            raise ValueError(f"{len(self.data)} octets of protocol data do not fit one option")

    @property
    def type_code(self) -> int:
        raise NotImplementedError

    def encode_data(self) -> bytes:
        return self.protocol.to_bytes(2, "big") + self.data


@dataclass(frozen=True, slots=True)
class AuthenticationProtocol(_ProtocolAndData):
    """``03 len <protocol u16> <data>``: e.g. C023 (PAP), C223 + algorithm (CHAP). Kept raw."""

    TYPE: ClassVar[int] = LcpOptionType.AUTHENTICATION_PROTOCOL

    @property
    def type_code(self) -> int:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class QualityProtocol(_ProtocolAndData):
    """``04 len <protocol u16> <data>``: e.g. C025 (LQR) + reporting period. Kept raw."""

    TYPE: ClassVar[int] = LcpOptionType.QUALITY_PROTOCOL

    @property
    def type_code(self) -> int:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class MagicNumber(Option):
    """``05 06 <u32>``: loopback detection. RFC 1661: "A Magic-Number of zero is illegal and MUST always
    be Nak'd" -- so zero is representable here (a peer may send it) and the LCP policy Naks it."""

    TYPE: ClassVar[int] = LcpOptionType.MAGIC_NUMBER
    magic: int

    def __post_init__(self) -> None:
        if not 0 <= self.magic <= 0xFFFFFFFF:
            raise ValueError(f"magic number {self.magic:#x} does not fit 32 bits")

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.magic.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class ProtocolFieldCompression(Option):
    """``07 02``: the sender can receive a one-octet Protocol field."""

    TYPE: ClassVar[int] = LcpOptionType.PROTOCOL_FIELD_COMPRESSION

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class AddressControlFieldCompression(Option):
    """``08 02``: the sender can receive frames without the FF 03 Address and Control fields."""

    TYPE: ClassVar[int] = LcpOptionType.ADDRESS_CONTROL_FIELD_COMPRESSION

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return b""


def _mru(_t: int, r: Reader) -> Option:
    return MaximumReceiveUnit(r.pull_u16("MRU"))


def _accm(_t: int, r: Reader) -> Option:
    return AsyncControlCharacterMap(r.pull_u32("ACCM"))


def _auth(_t: int, r: Reader) -> Option:
    protocol = r.pull_u16("authentication protocol")
    return AuthenticationProtocol(protocol, r.pull_rest())


def _quality(_t: int, r: Reader) -> Option:
    protocol = r.pull_u16("quality protocol")
    return QualityProtocol(protocol, r.pull_rest())


def _magic(_t: int, r: Reader) -> Option:
    return MagicNumber(r.pull_u32("magic number"))


def _pfc(_t: int, _r: Reader) -> Option:
    return ProtocolFieldCompression()


def _acfc(_t: int, _r: Reader) -> Option:
    return AddressControlFieldCompression()


LCP_OPTIONS: Final = OptionRegistry(
    "LCP",
    {
        LcpOptionType.MRU: _mru,
        LcpOptionType.ACCM: _accm,
        LcpOptionType.AUTHENTICATION_PROTOCOL: _auth,
        LcpOptionType.QUALITY_PROTOCOL: _quality,
        LcpOptionType.MAGIC_NUMBER: _magic,
        LcpOptionType.PROTOCOL_FIELD_COMPRESSION: _pfc,
        LcpOptionType.ADDRESS_CONTROL_FIELD_COMPRESSION: _acfc,
    },
)
"""The default LCP registry; ``LCP_OPTIONS.copy()`` to extend it without touching this one."""
