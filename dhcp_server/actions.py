"""What goes into the sans-IO engine and what comes out of it.

The driver turns datagrams into :class:`Received`, hands the engine's :class:`Outcome`
writes to the store in one batch commit, and only then sends the replies marked
``durable``: an ACK never leaves before its lease is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dhcp_server.model import CeRecord, ClientKey, Lease, VpnRecord

__all__ = [
    "CeDelete",
    "CeWrite",
    "CeilingWrite",
    "Event",
    "LeaseWrite",
    "Outcome",
    "Received",
    "ReplayWrite",
    "Reply",
    "SecretDelete",
    "SecretWrite",
    "VpnDelete",
    "VpnWrite",
    "Write",
]


@dataclass(frozen=True, slots=True)
class Received:
    """One UDP datagram that reached port 67."""

    payload: bytes
    source: IPv4Address
    source_port: int = 68
    interface: str | None = None  # the receiving interface, for clients on a directly attached link


@dataclass(frozen=True, slots=True)
class Reply:
    """A datagram to send from port 67.

    ``hardware`` is set when the client has no address yet and asked for unicast
    (RFC 2131 4.1): the driver must make ``destination`` resolve to it (a neighbour entry)
    before sending. ``durable`` replies wait for the batch commit of the same outcome.
    """

    payload: bytes
    destination: IPv4Address
    port: int
    interface: str | None = None
    hardware: bytes | None = None
    durable: bool = False

    def made_durable(self) -> Reply:
        """The same reply, held until the outcome's writes are committed."""
        return Reply(self.payload, self.destination, self.port, self.interface, self.hardware, True)


@dataclass(frozen=True, slots=True)
class LeaseWrite:
    lease: Lease


@dataclass(frozen=True, slots=True)
class ReplayWrite:
    """The last replay-detection value accepted from a client (RFC 3118 RDM 0)."""

    client: ClientKey
    value: int


@dataclass(frozen=True, slots=True)
class CeilingWrite:
    """The server's own replay counter reservation (options.replay)."""

    value: int


@dataclass(frozen=True, slots=True)
class VpnWrite:
    vpn: VpnRecord


@dataclass(frozen=True, slots=True)
class VpnDelete:
    vpn_id: int


@dataclass(frozen=True, slots=True)
class CeWrite:
    ce: CeRecord


@dataclass(frozen=True, slots=True)
class CeDelete:
    name: str


@dataclass(frozen=True, slots=True)
class SecretWrite:
    """An RFC 3118 key. ``repr`` hides it: writes end up in debug logs."""

    secret_id: int
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecretDelete:
    secret_id: int


Write = (
    LeaseWrite
    | ReplayWrite
    | CeilingWrite
    | VpnWrite
    | VpnDelete
    | CeWrite
    | CeDelete
    | SecretWrite
    | SecretDelete
)


@dataclass(frozen=True, slots=True)
class Event:
    """A structured log event: a name and fields that never include key material."""

    name: str
    fields: tuple[tuple[str, object], ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"event": self.name, **dict(self.fields)}


@dataclass(slots=True)
class Outcome:
    """Everything one input caused: store writes, replies, log events."""

    writes: list[Write] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.writes.extend(other.writes)
        self.replies.extend(other.replies)
        self.events.extend(other.events)

    @property
    def needs_commit(self) -> bool:
        return bool(self.writes)
