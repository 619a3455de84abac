"""Name server address options of RFC 1877: Primary/Secondary DNS (129, 131) and NBNS (130, 132).

Each is ``type 06 <address>``; a peer asks with 0.0.0.0 and learns the address from the Configure-Nak.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import ClassVar

from ipcp.option import Option
from ipcp.rfc1332 import IpcpOptionType
from options.wire import Reader

__all__ = [
    "NameServerOption",
    "PrimaryDns",
    "PrimaryNbns",
    "SecondaryDns",
    "SecondaryNbns",
    "decode_name_server",
]


@dataclass(frozen=True, slots=True)
class NameServerOption(Option):
    """Common shape of the four RFC 1877 options; use the concrete subclasses."""

    TYPE: ClassVar[int] = 0
    address: IPv4Address

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.address.packed


@dataclass(frozen=True, slots=True)
class PrimaryDns(NameServerOption):
    TYPE: ClassVar[int] = IpcpOptionType.PRIMARY_DNS


@dataclass(frozen=True, slots=True)
class PrimaryNbns(NameServerOption):
    TYPE: ClassVar[int] = IpcpOptionType.PRIMARY_NBNS


@dataclass(frozen=True, slots=True)
class SecondaryDns(NameServerOption):
    TYPE: ClassVar[int] = IpcpOptionType.SECONDARY_DNS


@dataclass(frozen=True, slots=True)
class SecondaryNbns(NameServerOption):
    TYPE: ClassVar[int] = IpcpOptionType.SECONDARY_NBNS


_BY_TYPE: dict[int, type[NameServerOption]] = {
    cls.TYPE: cls for cls in (PrimaryDns, PrimaryNbns, SecondaryDns, SecondaryNbns)
}


def decode_name_server(option_type: int, r: Reader) -> Option:
    return _BY_TYPE[option_type](r.pull_ipv4("name server address"))
