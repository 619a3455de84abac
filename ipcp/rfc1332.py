"""IPCP Configuration Options of RFC 1332 (and the deprecated IP-Addresses of RFC 1172).

IPCP uses LCP's option framing; this module only knows the Data fields. The registry that maps
IPCP option types to these decoders is :data:`ipcp.ipcp_options.IPCP_OPTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address
from typing import ClassVar, Final

from ipcp.option import MAX_OPTION_DATA, Option
from options.wire import Reader

__all__ = [
    "VJ_COMPRESSED_TCP",
    "IpAddress",
    "IpAddresses",
    "IpCompressionProtocol",
    "IpcpOptionType",
    "decode_ip_address",
    "decode_ip_addresses",
    "decode_ip_compression",
]

VJ_COMPRESSED_TCP: Final = 0x002D
"""RFC 1332 section 3.2: "Van Jacobson Compressed TCP/IP" protocol number."""


class IpcpOptionType(IntEnum):
    IP_ADDRESSES = 1
    IP_COMPRESSION_PROTOCOL = 2
    IP_ADDRESS = 3
    PRIMARY_DNS = 129
    PRIMARY_NBNS = 130
    SECONDARY_DNS = 131
    SECONDARY_NBNS = 132


@dataclass(frozen=True, slots=True)
class IpAddresses(Option):
    """Type 1, ``01 0a <source> <destination>`` (RFC 1172; RFC 1332 section 3.1 deprecates it).

    Still spoken by pppd: when a peer asks with type 1, pppd switches its own request to type 1,
    so a peer must be able to acknowledge it (``docs/wire-format-ppp.md``).
    """

    TYPE: ClassVar[int] = IpcpOptionType.IP_ADDRESSES
    source: IPv4Address
    destination: IPv4Address

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.source.packed + self.destination.packed


@dataclass(frozen=True, slots=True)
class IpCompressionProtocol(Option):
    """Type 2, ``02 len <protocol u16> <data>`` (RFC 1332 section 3.2).

    For Van Jacobson (002d) the data is ``Max-Slot-Id Comp-Slot-Id``; RFC 1172 peers send it
    empty. Any data is kept so the option re-encodes exactly; :attr:`vj_parameters` reads VJ's.
    """

    TYPE: ClassVar[int] = IpcpOptionType.IP_COMPRESSION_PROTOCOL
    protocol: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFFFF:
            raise ValueError(f"compression protocol {self.protocol:#x} does not fit 16 bits")
        if len(self.data) > MAX_OPTION_DATA - 2:
            raise ValueError(f"{len(self.data)} octets of compression data do not fit one option")

    @classmethod
    def van_jacobson(cls, max_slot_id: int = 15, compress_slot_id: bool = True) -> IpCompressionProtocol:
        """VJ with ``Max-Slot-Id`` (slots - 1) and whether the slot id may be compressed."""
        if not 0 <= max_slot_id <= 0xFF:
            raise ValueError(f"Max-Slot-Id {max_slot_id} is not an octet")
        return cls(VJ_COMPRESSED_TCP, bytes((max_slot_id, int(compress_slot_id))))

    @property
    def vj_parameters(self) -> tuple[int, int] | None:
        """``(max_slot_id, comp_slot_id)`` for an RFC 1332 VJ option, else None."""
        if self.protocol != VJ_COMPRESSED_TCP or len(self.data) != 2:
            return None
        return self.data[0], self.data[1]

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.protocol.to_bytes(2, "big") + self.data


@dataclass(frozen=True, slots=True)
class IpAddress(Option):
    """Type 3, ``03 06 <address>`` (RFC 1332 section 3.3): the sender's own address; 0.0.0.0 asks the
    peer to supply one by Configure-Nak."""

    TYPE: ClassVar[int] = IpcpOptionType.IP_ADDRESS
    address: IPv4Address

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_data(self) -> bytes:
        return self.address.packed


def decode_ip_addresses(_t: int, r: Reader) -> Option:
    return IpAddresses(r.pull_ipv4("IP-Addresses source"), r.pull_ipv4("IP-Addresses destination"))


def decode_ip_compression(_t: int, r: Reader) -> Option:
    protocol = r.pull_u16("IP compression protocol")
    return IpCompressionProtocol(protocol, r.pull_rest())


def decode_ip_address(_t: int, r: Reader) -> Option:
    return IpAddress(r.pull_ipv4("IP-Address"))
