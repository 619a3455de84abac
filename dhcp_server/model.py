"""The server's values: configuration, leases, CEs and VPNs.

All frozen: the engine replaces a lease rather than mutating it, so a value handed to the
store for a batch commit can never change underneath it.
"""

from __future__ import annotations

import enum
import itertools
from bisect import bisect_right
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

__all__ = [
    "AuthPolicy",
    "CeRecord",
    "ClientKey",
    "Lease",
    "LeaseState",
    "PoolRange",
    "QuarantinePolicy",
    "Reservation",
    "ServerConfig",
    "SubnetConfig",
    "VpnRecord",
]


class AuthPolicy(enum.Enum):
    """What a subnet (or VPN) demands of RFC 3118 delayed authentication."""

    #: Every client message that is not a DISCOVER/INFORM request for authentication must
    #: carry a valid MAC; clients without credentials are not served.
    REQUIRED = "required"
    #: Clients that authenticate are held to it (a bad MAC is dropped); others are served
    #: without authentication.
    OPTIONAL = "optional"
    #: Plain RFC 2131; option 90 from clients is ignored.
    OFF = "off"


class ClientKey(bytes):
    """How a client is recognised: option 61 when sent (RFC 2131 4.2), else htype + chaddr.

    A ``bytes`` subclass, so hashing and comparison stay in C: client keys index every
    per-client table on the server's hot path.
    """

    __slots__ = ()

    @classmethod
    def from_client_id(cls, client_id: bytes) -> ClientKey:
        return cls(b"id:" + client_id)

    @classmethod
    def from_hardware(cls, htype: int, address: bytes) -> ClientKey:
        return cls(b"hw:" + bytes((htype,)) + address)

    @property
    def value(self) -> bytes:
        return bytes(self)

    def __str__(self) -> str:
        kind, _, raw = self.partition(b":")
        return f"{kind.decode('ascii', 'replace')}:{raw.hex(':')}"

    def __repr__(self) -> str:
        return f"ClientKey({bytes(self)!r})"


@dataclass(frozen=True, slots=True)
class PoolRange:
    first: IPv4Address
    last: IPv4Address

    def __post_init__(self) -> None:
        if int(self.last) < int(self.first):
            raise ValueError(f"pool range {self.first}-{self.last} is empty")

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv4Address) and self.first <= address <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A fixed address for one client (by client identifier or hardware address)."""

    client: ClientKey
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class SubnetConfig:
    """One subnet the server answers for, directly attached or behind relays."""

    network: IPv4Network
    pools: tuple[PoolRange, ...]
    routers: tuple[IPv4Address, ...] = ()
    dns_servers: tuple[IPv4Address, ...] = ()
    domain_name: str | None = None
    lease_time: int = 3600
    renewal_time: int | None = None  # T1, default lease/2 (RFC 2131 4.4.5)
    rebinding_time: int | None = None  # T2, default lease*7/8
    reservations: tuple[Reservation, ...] = ()
    auth: AuthPolicy = AuthPolicy.REQUIRED
    interface: str | None = None  # where it is directly attached, if it is

    def __post_init__(self) -> None:
        for pool in self.pools:
            if pool.first not in self.network or pool.last not in self.network:
                raise ValueError(f"pool {pool.first}-{pool.last} is outside {self.network}")
        for reservation in self.reservations:
            if reservation.address not in self.network:
                raise ValueError(f"reservation {reservation.address} is outside {self.network}")
        t1, t2 = self.t1, self.t2
        if not 0 < t1 < t2 < self.lease_time:
            raise ValueError(f"need 0 < T1 ({t1}) < T2 ({t2}) < lease time ({self.lease_time})")

    @property
    def t1(self) -> int:
        return self.renewal_time if self.renewal_time is not None else self.lease_time // 2

    @property
    def t2(self) -> int:
        return self.rebinding_time if self.rebinding_time is not None else self.lease_time * 7 // 8


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """draft-lee section 6: over ``max_messages`` per ``window`` seconds, ignored for ``duration``."""

    max_messages: int = 30
    window: float = 10.0
    duration: float = 300.0
    max_tracked: int = 65536

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.window <= 0 or self.duration < 0 or self.max_tracked < 1:
            raise ValueError("quarantine: max_messages >= 1, window > 0, duration >= 0, max_tracked >= 1")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    server_id: IPv4Address
    subnets: tuple[SubnetConfig, ...]
    offer_hold: float = 60.0  # how long an OFFERed address stays reserved for its client
    decline_hold: float = 3600.0  # how long a DECLINEd address is kept out of use (RFC 2131 4.3.3)
    quarantine: QuarantinePolicy = field(default_factory=QuarantinePolicy)
    forcerenew_first_retry: float = 4.0  # RFC 3203 leaves it open; doubled on every retry
    forcerenew_max_attempts: int = 5
    forcerenew_holddown: float = 1.0  # VPN changes within this window make one round of FORCERENEWs
    peer_ce_code: int = 224
    vpn_server_code: int = 225
    auth_realm: bytes = b""  # the realm of RFC 3118 protocol 2 (dhcpcd "delayedrealm")
    # Subnets sorted by first address, for a binary search: every relayed message looks its
    # subnet up by giaddr, and an ISP's server has a subnet per relayed link.
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _ends: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _by_start: tuple[SubnetConfig, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.subnets, key=lambda s: int(s.network.network_address))
        for a, b in itertools.pairwise(ordered):
            if a.network.overlaps(b.network):  # sorted: only neighbours can overlap
                raise ValueError(f"subnets {a.network} and {b.network} overlap")
        object.__setattr__(self, "_starts", tuple(int(s.network.network_address) for s in ordered))
        object.__setattr__(self, "_ends", tuple(int(s.network.broadcast_address) for s in ordered))
        object.__setattr__(self, "_by_start", tuple(ordered))

    def subnet_for(self, address: IPv4Address) -> SubnetConfig | None:
        value = int(address)
        at = bisect_right(self._starts, value) - 1
        if at < 0:
            return None
        return self._by_start[at] if value <= self._ends[at] else None


class LeaseState(enum.Enum):
    BOUND = "bound"
    RELEASED = "released"
    EXPIRED = "expired"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class Lease:
    """An address bound to a client, as the store keeps it.

    ``xid`` is the transaction of the client's last REQUEST: dhcpcd accepts a FORCERENEW
    only with its current xid. ``nonce`` is the RFC 6704 key handed in the last ACK.
    """

    address: IPv4Address
    client: ClientKey
    chaddr: bytes
    expires: float
    state: LeaseState = LeaseState.BOUND
    xid: int = 0
    hostname: str | None = None
    nonce: bytes | None = None
    updated: float = 0.0

    def active(self, now: float) -> bool:
        return self.state is LeaseState.BOUND and self.expires > now


@dataclass(frozen=True, slots=True)
class CeRecord:
    """A customer-edge router the operator provisioned.

    ``secret_id`` names its RFC 3118 key (the key itself lives in the secret store, never
    here, so this value can be logged). ``static_address`` is for CEs addressed outside
    our DHCP (draft-lee appendix 2: the VPN provider "informed of the CE IP address offline").
    """

    name: str
    client: ClientKey | None
    secret_id: int | None
    vpns: frozenset[int] = frozenset()
    static_address: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class VpnRecord:
    vpn_id: int
    name: str
    vpn_servers: tuple[IPv4Address, ...] = ()
    auth: AuthPolicy = AuthPolicy.REQUIRED

    def __post_init__(self) -> None:
        if not 0 <= self.vpn_id <= 0xFFFFFFFF:
            raise ValueError(f"VPN ID {self.vpn_id} is not 32 bits")
