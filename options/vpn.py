"""The two DHCP options of draft-lee-ppvpn-ce-auto-config-02 (appendix 3.1 and 5.1).

Codes are "TBD" in the draft; the defaults come from the site-specific range of RFC 3942
(224-254) and another pair can be registered with :func:`vpn_specs`. The wire format and
the reasons behind every choice are in docs/wire-format.md:

Peer-CE (after RFC 3396 concatenation) is a sequence of blocks::

    +--------+--------+--------+--------+--------+--------+--------...
    |            VPN ID (32)            | Flags  | Count  | Count x IPv4
    +--------+--------+--------+--------+--------+--------+--------...
    Flags: 0000000A   A=1 add these peers, A=0 delete them (none listed: all)

VPN configuration server: a list of IPv4 addresses in order of preference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from options.errors import DecodeError
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.spec import AddressListSpec, OptionSpec
from options.wire import ipv4_tuple, pack_ipv4s

__all__ = [
    "DEFAULT_PEER_CE_CODE",
    "DEFAULT_VPN_SERVER_CODE",
    "MAX_PEERS_PER_BLOCK",
    "PEER_CE",
    "VPN_SERVERS",
    "PeerCeBlock",
    "PeerCeSpec",
    "apply_peer_blocks",
    "full_sync_blocks",
    "registry_with_vpn_codes",
    "vpn_specs",
]

DEFAULT_PEER_CE_CODE: Final = 224
DEFAULT_VPN_SERVER_CODE: Final = 225
MAX_PEERS_PER_BLOCK: Final = 255
FLAG_ADD: Final = 0x01


@dataclass(frozen=True, slots=True)
class PeerCeBlock:
    """One block of the Peer-CE option: peers to add to, or delete from, one VPN."""

    vpn_id: int
    add: bool
    peers: tuple[IPv4Address, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.vpn_id <= 0xFFFFFFFF:
            raise ValueError(f"VPN ID {self.vpn_id} is not 32 bits")
        if len(self.peers) > MAX_PEERS_PER_BLOCK:
            raise ValueError(f"a block holds at most {MAX_PEERS_PER_BLOCK} peers; use several blocks")
        if not all(isinstance(p, IPv4Address) for p in self.peers):
            raise TypeError("peers are IPv4Address values")

    def to_json(self) -> dict[str, object]:
        return {"vpn_id": self.vpn_id, "add": self.add, "peers": [str(p) for p in self.peers]}


class PeerCeSpec(OptionSpec[tuple[PeerCeBlock, ...]]):
    """The Peer-CE option: one or more :class:`PeerCeBlock`."""

    __slots__ = ()

    def validate(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        if size == 0:
            raise DecodeError("peer_ce: empty option, at least one block is required", 0)
        while pos < size:
            if pos + 6 > size:
                raise DecodeError(f"peer_ce: block header needs 6 bytes, {size - pos} left", pos)
            end = pos + 6 + 4 * data[pos + 5]
            if end > size:
                raise DecodeError(f"peer_ce: block of {data[pos + 5]} peers runs past the option", pos)
            pos = end

    def decode(self, data: bytes) -> tuple[PeerCeBlock, ...]:
        self.validate(data)
        blocks = []
        pos = 0
        while pos < len(data):
            end = pos + 6 + 4 * data[pos + 5]
            vpn_id = int.from_bytes(data[pos : pos + 4], "big")
            blocks.append(
                PeerCeBlock(vpn_id, bool(data[pos + 4] & FLAG_ADD), ipv4_tuple(data[pos + 6 : end]))
            )
            pos = end
        return tuple(blocks)

    def encode(self, value: tuple[PeerCeBlock, ...]) -> bytes:
        if not value:
            raise ValueError("peer_ce needs at least one block")
        return b"".join(
            b.vpn_id.to_bytes(4, "big")
            + bytes((FLAG_ADD if b.add else 0, len(b.peers)))
            + pack_ipv4s(b.peers)
            for b in value
        )


def vpn_specs(
    peer_ce_code: int = DEFAULT_PEER_CE_CODE, vpn_server_code: int = DEFAULT_VPN_SERVER_CODE
) -> tuple[PeerCeSpec, AddressListSpec]:
    """The two VPN option specs at the given codes, to register in an :class:`OptionRegistry`."""
    for code in (peer_ce_code, vpn_server_code):
        if not 224 <= code <= 254:
            raise ValueError(f"code {code} is outside the site-specific range 224-254 (RFC 3942)")
    if peer_ce_code == vpn_server_code:
        raise ValueError("the two VPN options need distinct codes")
    return PeerCeSpec(peer_ce_code, "peer_ce"), AddressListSpec(vpn_server_code, "vpn_configuration_servers")


def registry_with_vpn_codes(peer_ce_code: int, vpn_server_code: int) -> OptionRegistry:
    """A copy of the default registry with the VPN options moved to other codes."""
    registry = OptionRegistry(
        tuple(s for s in DEFAULT_REGISTRY if s.code not in (PEER_CE.code, VPN_SERVERS.code))
    )
    for spec in vpn_specs(peer_ce_code, vpn_server_code):
        registry.register(spec, replace=True)
    return registry


PEER_CE, VPN_SERVERS = vpn_specs()
DEFAULT_REGISTRY.register(PEER_CE)
DEFAULT_REGISTRY.register(VPN_SERVERS)


def full_sync_blocks(memberships: Mapping[int, Iterable[IPv4Address]]) -> tuple[PeerCeBlock, ...]:
    """The blocks a server sends in reply to DHCPINFORM: for each VPN a reset then its peers.

    "Delete with no peers" clears what the client held, then add-blocks of up to 255 peers
    carry the whole current set, so the reply is complete whatever the client believed.
    """
    blocks: list[PeerCeBlock] = []
    for vpn_id, peers in memberships.items():
        ordered = sorted(set(peers))
        blocks.append(PeerCeBlock(vpn_id, add=False))
        blocks.extend(
            PeerCeBlock(vpn_id, add=True, peers=tuple(ordered[i : i + MAX_PEERS_PER_BLOCK]))
            for i in range(0, max(len(ordered), 1), MAX_PEERS_PER_BLOCK)
        )
    return tuple(blocks)


def apply_peer_blocks(
    current: Mapping[int, frozenset[IPv4Address]], blocks: Iterable[PeerCeBlock], *, complete: bool
) -> dict[int, frozenset[IPv4Address]]:
    """The peer sets after applying ``blocks`` in order to ``current``.

    ``complete`` is for a reply to DHCPINFORM: it names every VPN the client belongs to,
    so VPNs it does not name are left (docs/wire-format.md, "Peer-CE semantics").
    """
    ordered = tuple(blocks)
    if complete:
        state = {v: set(current.get(v, frozenset())) for v in {b.vpn_id for b in ordered}}
    else:
        state = {v: set(p) for v, p in current.items()}
    for block in ordered:
        peers = state.setdefault(block.vpn_id, set())
        if block.add:
            peers.update(block.peers)
        elif block.peers:
            peers.difference_update(block.peers)
        else:
            peers.clear()
    return {v: frozenset(p) for v, p in state.items()}
