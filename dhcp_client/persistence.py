"""What the client remembers across restarts, and where.

RFC 3118 replay protection only works if the last replay value accepted from the server
survives a restart (dhcpcd keeps it in its lease file), and the client's own counter must
continue above every value it ever sent. The lease itself lets the client reboot into
INIT-REBOOT. The core calls an injected :class:`StateStore`; :class:`FileStateStore`
writes a small JSON file atomically with mode 0600.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol

from dhcp_client.events import Lease
from options.durable import replace_file

__all__ = ["ClientState", "FileStateStore", "MemoryStateStore", "StateStore"]

_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClientState:
    """Everything that survives a restart. The key is not in it (it lives in its own file)."""

    lease: Lease | None = None
    server_replay: int | None = None  # last RFC 3118 value accepted from the server
    nonce: bytes | None = field(default=None, repr=False)  # RFC 6704 key from the last ACK
    nonce_replay: int | None = None  # last value accepted with protocol 3
    replay_ceiling: int = 0  # our own counter's reservation (options.replay)
    peers: Mapping[int, frozenset[IPv4Address]] = field(default_factory=dict)
    vpn_servers: tuple[IPv4Address, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "lease": None if self.lease is None else self.lease.to_json(),
            "server_replay": self.server_replay,
            "nonce": None if self.nonce is None else self.nonce.hex(),
            "nonce_replay": self.nonce_replay,
            "replay_ceiling": self.replay_ceiling,
            "peers": {str(v): [str(a) for a in sorted(p)] for v, p in sorted(self.peers.items())},
            "vpn_servers": [str(a) for a in self.vpn_servers],
        }

    @classmethod
    def from_json(cls, data: Any) -> ClientState:
        """Raises ``ValueError`` (or ``KeyError``/``TypeError``) for a file that is not ours."""
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise ValueError("not a ce-autoconf client state (version 1)")
        lease = data.get("lease")
        nonce = data.get("nonce")
        return cls(
            lease=None if lease is None else Lease.from_json(lease),
            server_replay=_optional_int(data.get("server_replay")),
            nonce=None if nonce is None else bytes.fromhex(nonce),
            nonce_replay=_optional_int(data.get("nonce_replay")),
            replay_ceiling=int(data.get("replay_ceiling", 0)),
            peers={
                int(v): frozenset(IPv4Address(a) for a in p) for v, p in dict(data.get("peers", {})).items()
            },
            vpn_servers=tuple(IPv4Address(a) for a in data.get("vpn_servers", ())),
        )


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"replay value {value!r} is not a 64-bit integer")
    return value


class StateStore(Protocol):
    """Durable storage of :class:`ClientState`; ``save`` returns once it is on disk."""

    def load(self) -> ClientState | None: ...

    def save(self, state: ClientState) -> None: ...


class MemoryStateStore:
    """For tests and for embedders that persist elsewhere; ``saves`` counts writes."""

    def __init__(self, state: ClientState | None = None) -> None:
        self.state = state
        self.saves = 0

    def load(self) -> ClientState | None:
        return self.state

    def save(self, state: ClientState) -> None:
        self.state = state
        self.saves += 1


class FileStateStore:
    """JSON in one file, replaced atomically (write, fsync, rename, fsync directory), mode 0600."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> ClientState | None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return ClientState.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: client state is corrupt: {exc}") from None

    def save(self, state: ClientState) -> None:
        text = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
        replace_file(self.path, text.encode("utf-8"))
