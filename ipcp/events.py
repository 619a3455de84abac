"""What the PPP engine tells its user: small frozen values, no packets.

``ce_runtime`` consumes the CE events (address, DNS, VPN peers) and never sees a packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

__all__ = [
    "AddressLearned",
    "DnsLearned",
    "IpDatagram",
    "LayerDown",
    "LayerFinished",
    "LayerStarted",
    "LayerUp",
    "LinkDead",
    "PeerConfigured",
    "PppEvent",
    "VpnOptionRejected",
    "VpnPeersChanged",
    "VpnPeersLearned",
]


class PppEvent:
    """Base of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LayerUp(PppEvent):
    """This-Layer-Up of one protocol (``protocol`` is e.g. 0xC021 for LCP, 0x8021 for IPCP)."""

    protocol: int


@dataclass(frozen=True, slots=True)
class LayerDown(PppEvent):
    protocol: int


@dataclass(frozen=True, slots=True)
class LayerStarted(PppEvent):
    protocol: int


@dataclass(frozen=True, slots=True)
class LayerFinished(PppEvent):
    """This-Layer-Finished; for LCP it means the link may be hung up."""

    protocol: int


@dataclass(frozen=True, slots=True)
class LinkDead(PppEvent):
    """LCP echoes went unanswered ``failures`` times in a row."""

    failures: int


@dataclass(frozen=True, slots=True)
class AddressLearned(PppEvent):
    """CE: IPCP opened with this local address; ``peer`` is the NAS's address if it told us."""

    local: IPv4Address
    peer: IPv4Address | None


@dataclass(frozen=True, slots=True)
class DnsLearned(PppEvent):
    """CE: name servers from RFC 1877 options (None where the NAS rejected or gave none)."""

    primary: IPv4Address | None
    secondary: IPv4Address | None


@dataclass(frozen=True, slots=True)
class VpnPeersChanged(PppEvent):
    """CE: the peers of one VPN changed; ``peers`` is the full new set (empty when the VPN is gone).

    ``member`` is False when the CE left the VPN, True for a VPN it is in (even with no peers yet).
    """

    vpn_id: int
    added: frozenset[IPv4Address]
    removed: frozenset[IPv4Address]
    peers: frozenset[IPv4Address]
    member: bool = True


@dataclass(frozen=True, slots=True)
class VpnPeersLearned(PppEvent):
    """CE: the complete VPN membership after a negotiation, VPN-ID -> peers (sorted pairs, hashable)."""

    vpns: tuple[tuple[int, frozenset[IPv4Address]], ...]

    def as_dict(self) -> dict[int, frozenset[IPv4Address]]:
        return dict(self.vpns)


@dataclass(frozen=True, slots=True)
class VpnOptionRejected(PppEvent):
    """CE: the NAS does not speak VPN-IP-Addresses; IPCP carries on without it."""


@dataclass(frozen=True, slots=True)
class PeerConfigured(PppEvent):
    """NAS: IPCP opened; the CE has ``address`` and was given these VPN peers."""

    address: IPv4Address
    vpns: tuple[tuple[int, frozenset[IPv4Address]], ...]


@dataclass(frozen=True, slots=True)
class IpDatagram(PppEvent):
    """An IPv4 datagram received while IPCP is Opened."""

    datagram: bytes
