"""What the client tells its embedder: small frozen values, one per thing that happened.

A vendor (and ``ce_runtime``) subscribes to these and never sees a packet. Every event
comes from a message that passed authentication (when a key is configured) or from the
client's own timers; :class:`AuthenticationFailure` is the only event a stranger can cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

__all__ = [
    "AuthenticationFailure",
    "ClientEvent",
    "Lease",
    "LeaseBound",
    "LeaseLost",
    "LeaseRenewed",
    "VpnPeersChanged",
    "VpnServersChanged",
    "event_to_json",
]

#: RFC 2132 9.2: a lease time of 0xffffffff "is used to indicate infinity".
INFINITE_LEASE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Lease:
    """An address the client holds, with the times RFC 2131 4.4.5 derives from it.

    ``acquired`` is when the REQUEST that obtained it was sent: "the client records the
    lease expiration time as the sum of the time at which the original request was sent
    and the duration of the lease" (RFC 2131 4.4.1).
    """

    address: IPv4Address
    server_id: IPv4Address
    acquired: float
    lease_time: int
    renewal_time: int
    rebinding_time: int
    subnet_mask: IPv4Address | None = None
    routers: tuple[IPv4Address, ...] = ()
    dns_servers: tuple[IPv4Address, ...] = ()
    domain_name: str | None = None

    def __post_init__(self) -> None:
        if self.lease_time != INFINITE_LEASE and not (
            0 < self.renewal_time < self.rebinding_time < self.lease_time
        ):
            raise ValueError("need 0 < T1 < T2 < lease time")

    @property
    def infinite(self) -> bool:
        return self.lease_time == INFINITE_LEASE

    @property
    def t1_at(self) -> float:
        return math.inf if self.infinite else self.acquired + self.renewal_time

    @property
    def t2_at(self) -> float:
        return math.inf if self.infinite else self.acquired + self.rebinding_time

    @property
    def expires_at(self) -> float:
        return math.inf if self.infinite else self.acquired + self.lease_time

    @property
    def prefix_length(self) -> int | None:
        if self.subnet_mask is None:
            return None
        return bin(int(self.subnet_mask)).count("1")

    def to_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "server_id": str(self.server_id),
            "acquired": self.acquired,
            "lease_time": self.lease_time,
            "renewal_time": self.renewal_time,
            "rebinding_time": self.rebinding_time,
            "subnet_mask": None if self.subnet_mask is None else str(self.subnet_mask),
            "routers": [str(a) for a in self.routers],
            "dns_servers": [str(a) for a in self.dns_servers],
            "domain_name": self.domain_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        mask = data.get("subnet_mask")
        return cls(
            address=IPv4Address(data["address"]),
            server_id=IPv4Address(data["server_id"]),
            acquired=float(data["acquired"]),
            lease_time=int(data["lease_time"]),
            renewal_time=int(data["renewal_time"]),
            rebinding_time=int(data["rebinding_time"]),
            subnet_mask=None if mask is None else IPv4Address(mask),
            routers=tuple(IPv4Address(a) for a in data.get("routers", ())),
            dns_servers=tuple(IPv4Address(a) for a in data.get("dns_servers", ())),
            domain_name=data.get("domain_name"),
        )


@dataclass(frozen=True, slots=True)
class LeaseBound:
    """A new lease (from SELECTING/REQUESTING or INIT-REBOOT): configure the address."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class LeaseRenewed:
    """The same address, new times (RENEWING or REBINDING answered)."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The address must no longer be used: ``reason`` is expired, nak, declined or released."""

    address: IPv4Address
    reason: str


@dataclass(frozen=True, slots=True)
class VpnPeersChanged:
    """The peers of one VPN after a DHCPINFORM reply; ``peers`` is the whole new set.

    A VPN the CE left is reported once with ``peers`` empty and everything in ``removed``.
    """

    vpn_id: int
    added: frozenset[IPv4Address]
    removed: frozenset[IPv4Address]
    peers: frozenset[IPv4Address]
    member: bool = True


@dataclass(frozen=True, slots=True)
class VpnServersChanged:
    """The VPN configuration servers (draft-lee appendix 5.1), in order of preference."""

    servers: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class AuthenticationFailure:
    """A message was refused for its authentication: ``reason`` is the counter it was added to."""

    reason: str
    message_type: str
    source: IPv4Address


ClientEvent = (
    LeaseBound | LeaseRenewed | LeaseLost | VpnPeersChanged | VpnServersChanged | AuthenticationFailure
)


def event_to_json(event: ClientEvent) -> dict[str, Any]:
    """One JSON-ready object per event (``ce-autoconf client`` logs these as JSON lines)."""
    out: dict[str, Any] = {"event": type(event).__name__}
    if isinstance(event, LeaseBound | LeaseRenewed):
        out["lease"] = event.lease.to_json()
    elif isinstance(event, LeaseLost):
        out.update(address=str(event.address), reason=event.reason)
    elif isinstance(event, VpnPeersChanged):
        out.update(
            vpn_id=event.vpn_id,
            member=event.member,
            added=[str(a) for a in sorted(event.added)],
            removed=[str(a) for a in sorted(event.removed)],
            peers=[str(a) for a in sorted(event.peers)],
        )
    elif isinstance(event, VpnServersChanged):
        out["servers"] = [str(a) for a in event.servers]
    else:
        out.update(reason=event.reason, message_type=event.message_type, source=str(event.source))
    return out
