"""Liveness of the tunnels (draft-ietf-l3vpn-ce-based-02 section 3.4: notice a dead tunnel, report it).

Sans-IO. A tunnel to a peer is *alive* while something arrived from the peer through it within
``dead_after`` seconds: a hello (UDP through the tunnel, accepted only when it arrived on the
peer's ipip link, i.e. after ESP decryption and the ``in`` policy), or a rise of the packet
counter of one of our inbound SAs from that peer (any traffic, e.g. a routing daemon's own
hellos). Counters are compared per SA (by SPI), not summed: when the receiver's window slides
an old SA and its count go away, and a sum would drop in the very round traffic arrived on
the new one.

A tracked tunnel that hears nothing for ``dead_after`` seconds (counted from when it was first
tracked, so a new tunnel gets that much time to come up) is reported *dead*. While dead, repairs
are asked for (a reconcile round: the kernel objects are re-checked, nothing is re-keyed) after
the failure policy of section 3.4: at once, then after ``min_interval`` doubling to
``max_interval``; after ``alarm_after`` repairs without a sign of life, an *alarm*. The first
sign of life reports the tunnel *alive* again and resets all of that.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address

from ce_runtime.runtime import Backoff

__all__ = ["Health", "Liveness", "Transition"]


class Health(Enum):
    PENDING = "pending"  # tracked, nothing heard yet, still within dead_after
    ALIVE = "alive"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Transition:
    """What :meth:`Liveness.check` reports: ``event`` is "alive", "dead", "repair" or "alarm"."""

    peer: IPv4Address
    event: str


@dataclass(slots=True)
class _Peer:
    since: float
    backoff: Backoff
    last_heard: float | None = None
    health: Health = Health.PENDING
    packets: dict[int, int] | None = None  # the inbound SAs' counters last seen, by SPI


@dataclass(slots=True)
class Liveness:
    dead_after: float = 7.0
    policy: Backoff = field(default_factory=Backoff)
    _peers: dict[IPv4Address, _Peer] = field(default_factory=dict)

    def track(self, peers: Collection[IPv4Address], now: float) -> None:
        """The tunnels that exist now: new ones start PENDING, vanished ones are forgotten."""
        for peer in set(self._peers) - set(peers):
            del self._peers[peer]
        for peer in peers:
            if peer not in self._peers:
                p = self.policy
                self._peers[peer] = _Peer(now, Backoff(p.min_interval, p.max_interval, p.alarm_after))

    def heard(self, peer: IPv4Address, now: float) -> None:
        state = self._peers.get(peer)
        if state is not None:
            state.last_heard = now if state.last_heard is None else max(state.last_heard, now)

    def counters(self, peer: IPv4Address, packets: Mapping[int, int], now: float) -> None:
        """The packet counters of our inbound SAs from ``peer``, by SPI. A sign of life: a counter
        that rose, or an SA that appeared since the last reading and already counted packets.
        The first reading is only a baseline (it may predate a restart)."""
        state = self._peers.get(peer)
        if state is None:
            return
        before = state.packets
        if before is not None and any(count > before.get(spi, 0) for spi, count in packets.items()):
            self.heard(peer, now)
        state.packets = dict(packets)

    def health(self, peer: IPv4Address) -> Health | None:
        state = self._peers.get(peer)
        return None if state is None else state.health

    def snapshot(self, now: float) -> dict[IPv4Address, tuple[Health, float | None]]:
        """Per tracked peer: its health and how long ago it was last heard (None: never)."""
        return {
            peer: (s.health, None if s.last_heard is None else round(now - s.last_heard, 3))
            for peer, s in self._peers.items()
        }

    def check(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        for peer, s in sorted(self._peers.items()):
            recent = s.last_heard is not None and now - s.last_heard <= self.dead_after
            if recent:
                if s.health is not Health.ALIVE:
                    s.health = Health.ALIVE
                    s.backoff.succeeded()
                    out.append(Transition(peer, "alive"))
                continue
            quiet_since = s.since if s.last_heard is None else max(s.since, s.last_heard)
            if now - quiet_since <= self.dead_after:
                continue  # a new tunnel still within its grace time
            if s.health is not Health.DEAD:
                s.health = Health.DEAD
                out.append(Transition(peer, "dead"))
            if now >= s.backoff.next_try:
                out.append(Transition(peer, "repair"))
                if s.backoff.failed(now):
                    out.append(Transition(peer, "alarm"))
        return out
