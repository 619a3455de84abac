"""VPN-IP-Addresses, the IPCP option of draft-lee-ppvpn-ce-auto-config-02 section 4.1.

The draft's diagram and text disagree about the length; we follow the diagram (the only reading
whose fields add up), see ``docs/wire-format-ppp.md``::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |    Length     |          Reserved           |A|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                             VPN-ID                            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        CE-IP-Address 1 ...                    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Length = 8 + 4n, so one option holds at most 61 addresses; longer lists are several options,
applied in order. A = 1 adds the listed CEs to the VPN, A = 0 deletes them. The 15 reserved bits
are sent as zero and kept as received so an option re-encodes byte-exact.

The type is not assigned by IANA; :data:`DEFAULT_VPN_OPTION_TYPE` is our default and any other
value can be registered with :func:`register_vpn_option`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from ipcp.option import Option, OptionRegistry
from options.errors import DecodeError
from options.wire import Reader, ipv4_tuple, pack_ipv4s

__all__ = [
    "DEFAULT_VPN_OPTION_TYPE",
    "MAX_ADDRESSES_PER_OPTION",
    "VPN_ID_NONE",
    "VpnIpAddresses",
    "apply_vpn_options",
    "decode_vpn_ip_addresses",
    "register_vpn_option",
    "vpn_options_for",
]

DEFAULT_VPN_OPTION_TYPE: Final = 0xC8
"""200: unassigned in IANA's IPCP registry (1-4 and 129-132 are taken), far from where new
assignments would land, and not 0x90, which the research peer in the pppd captures used."""

MAX_ADDRESSES_PER_OPTION: Final = 61
"""(255 - 8) // 4: the Length octet bounds one option to 61 CE addresses."""

VPN_ID_NONE: Final = 0
"""VPN-ID 0 with an empty list means "no VPN": a CE's question, or a NAS's answer for a CE in none."""

_FIXED: Final = 6  # Reserved/A (2) + VPN-ID (4): the data before the address list
_ADD_BIT: Final = 0x0001


@dataclass(frozen=True, slots=True)
class VpnIpAddresses(Option):
    """One VPN-IP-Addresses option: peers of one VPN to add (``add=True``) or delete."""

    vpn_id: int
    addresses: tuple[IPv4Address, ...] = ()
    add: bool = True
    reserved: int = 0
    option_type: int = DEFAULT_VPN_OPTION_TYPE

    def __post_init__(self) -> None:
        if not 0 <= self.vpn_id <= 0xFFFFFFFF:
            raise ValueError(f"VPN-ID {self.vpn_id} does not fit 32 bits")
        if len(self.addresses) > MAX_ADDRESSES_PER_OPTION:
            raise ValueError(
                f"{len(self.addresses)} addresses exceed the {MAX_ADDRESSES_PER_OPTION} one option holds;"
                " split them with vpn_options_for()"
            )
        if not all(isinstance(a, IPv4Address) for a in self.addresses):
            raise TypeError("addresses must be IPv4Address values")
        if not 0 <= self.reserved <= 0x7FFF:
            raise ValueError(f"reserved bits {self.reserved:#x} do not fit 15 bits")
        if not 0 <= self.option_type <= 0xFF:
            raise ValueError(f"option type {self.option_type} is not an octet")

    @property
    def type_code(self) -> int:
        return self.option_type

    def encode_data(self) -> bytes:
        flags = (self.reserved << 1) | (_ADD_BIT if self.add else 0)
        return flags.to_bytes(2, "big") + self.vpn_id.to_bytes(4, "big") + pack_ipv4s(self.addresses)


def decode_vpn_ip_addresses(option_type: int, r: Reader) -> Option:
    """Data of 6 + 4n octets; the draft text's 6 + 4n *total* length (data 4 + 4n) is refused."""
    size = r.remaining
    if size < _FIXED or (size - _FIXED) % 4:
        raise DecodeError(
            f"VPN-IP-Addresses length {size + 2} is not 8 + 4n (draft diagram layout)", r.offset - 1
        )
    flags = r.pull_u16("VPN-IP-Addresses reserved/A")
    vpn_id = r.pull_u32("VPN-ID")
    addresses = ipv4_tuple(r.pull_rest())
    return VpnIpAddresses(vpn_id, addresses, bool(flags & _ADD_BIT), flags >> 1, option_type)


def register_vpn_option(registry: OptionRegistry, option_type: int = DEFAULT_VPN_OPTION_TYPE) -> None:
    """Teach ``registry`` the VPN option under ``option_type``: the same path any user option takes."""
    registry.register(option_type, decode_vpn_ip_addresses)


def vpn_options_for(
    peers: Mapping[int, Sequence[IPv4Address]], option_type: int = DEFAULT_VPN_OPTION_TYPE
) -> tuple[VpnIpAddresses, ...]:
    """The canonical options announcing ``peers`` (VPN-ID -> CE addresses) as a full set.

    VPNs in ascending VPN-ID order, each list in 61-address chunks with A = 1; an empty mapping is
    the single option ``VPN-ID 0, no addresses``. A VPN with no peers still gets one empty option so
    the CE learns it is a member.
    """
    out: list[VpnIpAddresses] = []
    for vpn_id in sorted(peers):
        addresses = tuple(peers[vpn_id])
        chunks = [
            addresses[i : i + MAX_ADDRESSES_PER_OPTION]
            for i in range(0, len(addresses), MAX_ADDRESSES_PER_OPTION)
        ]
        for chunk in chunks or [()]:
            out.append(VpnIpAddresses(vpn_id, chunk, True, 0, option_type))
    if not out:
        out.append(VpnIpAddresses(VPN_ID_NONE, (), True, 0, option_type))
    return tuple(out)


def apply_vpn_options(options: Iterable[VpnIpAddresses]) -> dict[int, frozenset[IPv4Address]]:
    """Fold options in order into VPN-ID -> peers: A = 1 adds, A = 0 deletes, starting from empty.

    VPN-ID 0 is "no VPN" and never appears in the result; a VPN whose options leave it empty but
    that was named with A = 1 stays, with no peers.
    """
    result: dict[int, set[IPv4Address]] = {}
    for option in options:
        if option.vpn_id == VPN_ID_NONE:
            continue
        peers = result.setdefault(option.vpn_id, set())
        if option.add:
            peers.update(option.addresses)
        else:
            peers.difference_update(option.addresses)
    return {vpn_id: frozenset(peers) for vpn_id, peers in result.items()}
