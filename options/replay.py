"""Replay-detection values that never go backwards, across restarts and clock steps.

RFC 3118 RDM 0 requires "a monotonically increasing counter"; dhcpcd rejects a repeated
value and remembers the last one across its own restarts, so a server or client that
restarts must continue above every value it ever sent. Values are NTP-format timestamps
(like dhcpcd's default) raised to at least one above the last value issued.

Writing the state for every message would cost a disk flush per reply, so the counter
persists a *reservation*: a ceiling a block of values ahead. After a crash it restarts
from the ceiling, skipping at most one block of unused values but never reusing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Protocol

from options.durable import replace_file

__all__ = ["FileCeilingStore", "ReplayCounter", "ntp_timestamp"]

NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
DEFAULT_BLOCK: Final = 1 << 32  # about one second of NTP time


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP time: seconds since 1900 in the high half, binary fraction in the low."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


class CeilingStore(Protocol):
    """Durable storage of one integer; ``save`` returns only once it is on disk."""

    def load(self) -> int: ...

    def save(self, ceiling: int) -> None: ...


class FileCeilingStore:
    """The ceiling in a small file, replaced atomically (write, fsync, rename, fsync dir)."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> int:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        text = raw.decode("ascii", "replace").strip()
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{self.path}: replay counter file is corrupt: {text[:40]!r}") from None
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{self.path}: replay counter {value} is out of range")
        return value

    def save(self, ceiling: int) -> None:
        replace_file(self.path, f"{ceiling}\n".encode("ascii"))


class ReplayCounter:
    """Issues strictly increasing 64-bit replay-detection values.

    ``now`` is passed in (Unix seconds), so the logic is testable without a clock. Each
    value is ``max(ntp(now), last + 1)``; a clock that steps back slows nothing and
    repeats nothing.
    """

    __slots__ = ("_ceiling", "_last", "_store", "block")

    def __init__(self, store: CeilingStore, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be positive")
        self._store = store
        self.block = block
        self._ceiling = store.load()
        self._last = self._ceiling  # after a restart, everything below the ceiling may have been used

    @property
    def last(self) -> int:
        return self._last

    def next(self, now: float) -> int:
        value = max(ntp_timestamp(now), self._last + 1)
        if value >= 1 << 64:
            raise OverflowError("replay detection counter exhausted")
        if value >= self._ceiling:
            ceiling = min(value + self.block, (1 << 64) - 1)
            self._store.save(ceiling)
            self._ceiling = ceiling
        self._last = value
        return value
