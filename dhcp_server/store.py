"""The storage interface the engine's driver commits to, and an in-memory implementation.

The engine keeps its working state in memory; the store is the durable copy it is
rebuilt from at start-up. ``commit`` takes a batch of writes and returns only once they
are durable, so many leases share one fsync. Backends: :mod:`dhcp_server.sqlite_store`
(the default) and :mod:`dhcp_server.postgres_store`; both fold a batch with
:class:`Batch` and report every failure as :class:`StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from dhcp_server.actions import (
    CeDelete,
    CeilingWrite,
    CeWrite,
    LeaseWrite,
    ReplayWrite,
    SecretDelete,
    SecretWrite,
    VpnDelete,
    VpnWrite,
    Write,
)
from dhcp_server.model import CeRecord, ClientKey, Lease, VpnRecord

if TYPE_CHECKING:
    from dhcp_server.config import StoreConfig

__all__ = ["Batch", "MemoryStore", "Snapshot", "Store", "StoreError", "check_u64", "open_store"]


class StoreError(Exception):
    """The store could not be opened or a commit failed (nothing of that commit is kept)."""


def check_u64(value: int, what: str) -> int:
    """Replay values are 64-bit unsigned on the wire; refuse anything else before SQL sees it."""
    if not 0 <= value < 1 << 64:
        raise StoreError(f"{what} {value} is not a 64-bit unsigned value")
    return value


@dataclass(slots=True)
class Snapshot:
    """The durable state, as loaded at start-up."""

    leases: dict[object, Lease] = field(default_factory=dict)  # by address
    replay: dict[ClientKey, int] = field(default_factory=dict)
    ceiling: int = 0
    vpns: dict[int, VpnRecord] = field(default_factory=dict)
    ces: dict[str, CeRecord] = field(default_factory=dict)
    secrets: dict[int, bytes] = field(default_factory=dict)

    def apply(self, writes: Sequence[Write]) -> None:
        """Fold writes into the snapshot: the reference semantics every store implements."""
        for w in writes:
            match w:
                case LeaseWrite(lease=lease):
                    self.leases[lease.address] = lease
                case ReplayWrite(client=client, value=value):
                    self.replay[client] = max(value, self.replay.get(client, 0))
                case CeilingWrite(value=value):
                    self.ceiling = max(value, self.ceiling)
                case VpnWrite(vpn=vpn):
                    self.vpns[vpn.vpn_id] = vpn
                case VpnDelete(vpn_id=vpn_id):
                    self.vpns.pop(vpn_id, None)
                case CeWrite(ce=ce):
                    self.ces[ce.name] = ce
                case CeDelete(name=name):
                    self.ces.pop(name, None)
                case SecretWrite(secret_id=secret_id, key=key):
                    self.secrets[secret_id] = key
                case SecretDelete(secret_id=secret_id):
                    self.secrets.pop(secret_id, None)


@dataclass(slots=True)
class Batch:
    """A batch folded to its net effect per key (``None`` means delete), as
    :meth:`Snapshot.apply` would leave it: what a SQL backend sends, one statement per kind."""

    leases: dict[IPv4Address, Lease] = field(default_factory=dict)
    replay: dict[bytes, int] = field(default_factory=dict)
    ceiling: int | None = None
    vpns: dict[int, VpnRecord | None] = field(default_factory=dict)
    ces: dict[str, CeRecord | None] = field(default_factory=dict)
    secrets: dict[int, bytes | None] = field(default_factory=dict)

    @classmethod
    def fold(cls, writes: Sequence[Write]) -> Batch:
        b = cls()
        for w in writes:
            match w:
                case LeaseWrite(lease=lease):
                    b.leases[lease.address] = lease
                case ReplayWrite(client=client, value=value):
                    check_u64(value, "replay value")
                    b.replay[client.value] = max(value, b.replay.get(client.value, 0))
                case CeilingWrite(value=value):
                    check_u64(value, "replay ceiling")
                    b.ceiling = value if b.ceiling is None else max(value, b.ceiling)
                case VpnWrite(vpn=vpn):
                    b.vpns[vpn.vpn_id] = vpn
                case VpnDelete(vpn_id=vpn_id):
                    b.vpns[vpn_id] = None
                case CeWrite(ce=ce):
                    b.ces[ce.name] = ce
                case CeDelete(name=name):
                    b.ces[name] = None
                case SecretWrite(secret_id=secret_id, key=key):
                    b.secrets[secret_id] = key
                case SecretDelete(secret_id=secret_id):
                    b.secrets[secret_id] = None
                case _:
                    raise StoreError(f"not a store write: {type(w).__name__}")
        return b


class Store(Protocol):
    """Durable storage: SQLite (dhcp_server.sqlite_store) or PostgreSQL (dhcp_server.postgres_store)."""

    def load(self) -> Snapshot:
        """Everything committed so far."""
        ...

    def commit(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable, all or none; returns once they are."""
        ...

    def close(self) -> None: ...


def open_store(config: StoreConfig) -> Store:
    """The backend ``[store]`` names; psycopg is imported only when PostgreSQL is chosen (it
    is an optional dependency). Raises :class:`StoreError`."""
    if config.backend == "postgresql":
        from dhcp_server.postgres_store import PostgresStore  # noqa: PLC0415

        assert config.dsn is not None  # config.py requires it for this backend
        return PostgresStore(config.dsn, config.password_file)
    from dhcp_server.sqlite_store import SqliteStore  # noqa: PLC0415

    assert config.path is not None
    return SqliteStore(config.path)


class MemoryStore:
    """A store that forgets on exit: for unit tests and the engine's property tests."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self.commits = 0

    def load(self) -> Snapshot:
        s = self._snapshot
        return Snapshot(dict(s.leases), dict(s.replay), s.ceiling, dict(s.vpns), dict(s.ces), dict(s.secrets))

    def commit(self, writes: Sequence[Write]) -> None:
        self._snapshot.apply(writes)
        self.commits += 1

    def close(self) -> None:
        pass
