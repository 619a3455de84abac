"""Outstanding FORCERENEWs (RFC 3203) and their retransmission schedule.

RFC 3203 leaves retransmission to the server: "the server ... MAY retransmit". Ours
retries with doubling intervals until the client comes back (a REQUEST or INFORM after
the FORCERENEW) or the attempts run out; what is outstanding is listed for operators.
"""

from __future__ import annotations

from dataclasses import dataclass

from dhcp_server.model import ClientKey

__all__ = ["ForcerenewQueue", "Pending"]


@dataclass(slots=True)
class Pending:
    client: ClientKey
    reason: str
    since: float
    due: float
    attempts: int = 0


class ForcerenewQueue:
    __slots__ = ("_pending", "first_retry", "max_attempts")

    def __init__(self, first_retry: float, max_attempts: int) -> None:
        self.first_retry = first_retry
        self.max_attempts = max_attempts
        self._pending: dict[ClientKey, Pending] = {}

    def schedule(self, client: ClientKey, reason: str, now: float) -> None:
        """Send one now; a client already waiting keeps its entry, with the retry count reset."""
        entry = self._pending.get(client)
        if entry is None:
            self._pending[client] = Pending(client, reason, now, now)
        else:
            entry.due, entry.attempts, entry.reason = now, 0, reason

    def due(self, now: float) -> list[Pending]:
        return [p for p in self._pending.values() if p.due <= now]

    def sent(self, client: ClientKey, now: float) -> None:
        """Record a transmission and plan the next: ``first_retry``, then doubling.

        After the last attempt the entry waits one more interval (a late answer still
        counts) and is then given up by the engine.
        """
        entry = self._pending[client]
        entry.attempts += 1
        entry.due = now + self.first_retry * 2 ** (entry.attempts - 1)

    def exhausted(self, client: ClientKey) -> bool:
        entry = self._pending.get(client)
        return entry is not None and entry.attempts >= self.max_attempts

    def answered(self, client: ClientKey) -> bool:
        """The client came back: stop retransmitting. True if it had one outstanding."""
        return self._pending.pop(client, None) is not None

    def drop(self, client: ClientKey) -> None:
        self._pending.pop(client, None)

    def next_due(self) -> float | None:
        return min((p.due for p in self._pending.values()), default=None)

    def outstanding(self) -> list[Pending]:
        return sorted(self._pending.values(), key=lambda p: p.since)

    def __len__(self) -> int:
        return len(self._pending)
