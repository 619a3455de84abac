"""draft-lee section 6: quarantine clients that exceed an attempt rate.

"the DHCP server may choose to 'quarantine' CEs which have exceeded the pre-defined
number of communication attempts allowed with the DHCP server within a given period.
Subsequent messages from these CEs may be discarded." A fixed window per client, a
bounded table (least recently seen forgotten first), time passed in.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from dhcp_server.model import ClientKey, QuarantinePolicy

__all__ = ["Admission", "Quarantine"]


class Admission(enum.Enum):
    ADMITTED = "admitted"
    QUARANTINED_NOW = "quarantined_now"  # this message crossed the limit: log it once
    QUARANTINED = "quarantined"


@dataclass(slots=True)
class _Window:
    start: float
    count: int
    until: float = 0.0  # quarantined until this time


class Quarantine:
    """Counts each client's messages; answers whether the next one may be processed."""

    __slots__ = ("_clients", "policy")

    def __init__(self, policy: QuarantinePolicy) -> None:
        self.policy = policy
        self._clients: OrderedDict[ClientKey, _Window] = OrderedDict()

    def admit(self, client: ClientKey, now: float) -> Admission:
        """Record one message from ``client`` and say whether it may be processed."""
        policy = self.policy
        window = self._clients.get(client)
        if window is None:
            if len(self._clients) >= policy.max_tracked:
                self._forget_one(now)
            self._clients[client] = _Window(now, 1)
            return Admission.ADMITTED
        self._clients.move_to_end(client)
        if window.until > now:
            return Admission.QUARANTINED
        if now - window.start >= policy.window:
            window.start, window.count = now, 0
        window.count += 1
        if window.count > policy.max_messages:
            window.until = now + policy.duration
            window.start, window.count = window.until, 0
            return Admission.QUARANTINED_NOW
        return Admission.ADMITTED

    def _forget_one(self, now: float) -> None:
        # Forget the least recently seen client that is not serving a quarantine, so a
        # flood of fresh identities cannot free a quarantined one.
        for key, window in self._clients.items():
            if window.until <= now:
                del self._clients[key]
                return
        self._clients.popitem(last=False)

    def quarantined(self, now: float) -> list[tuple[ClientKey, float]]:
        return [(k, w.until) for k, w in self._clients.items() if w.until > now]

    def release(self, client: ClientKey) -> bool:
        """End a quarantine by hand (management)."""
        return self._clients.pop(client, None) is not None
