"""The storage interface the engine's driver commits to, and an in-memory implementation.

The engine keeps its working state in memory; the store is the durable copy it is
rebuilt from at start-up. ``commit`` takes a batch of writes and returns only once they
are durable, so many leases share one fsync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

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

__all__ = ["MemoryStore", "Snapshot", "Store"]


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


class Store(Protocol):
    """Durable storage: SQLite by default (dhcp_server.sqlite_store); PostgreSQL can follow."""

    def load(self) -> Snapshot:
        """Everything committed so far."""
        ...

    def commit(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable, all or none; returns once they are."""
        ...

    def close(self) -> None: ...


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
