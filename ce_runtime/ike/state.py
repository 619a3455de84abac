"""The tunnel state of IKE-keyed peers (sans-IO): charon's SAs in, tunnel events out.

charon is asked (``list-sas`` for one connection) whenever one of its events names the connection,
and the answer is reduced to a :class:`ConnView`; nothing is inferred from the event bodies alone.
:class:`PeerTracker` turns successive views and initiation results into :class:`TunnelEvent` s:

- ``up``       an ESTABLISHED IKE_SA carries an INSTALLED ``ipip`` CHILD_SA (the tunnel exists);
- ``rekeyed``  still up, other SPIs (CHILD_SA rekey; traffic was never interrupted);
- ``down``     it was up and is not any more (peer deleted it, DPD, our own terminate);
- ``failed``   an initiation failed (``detail``: ``auth-failed``, ``no-proposal``, ``unreachable``,
               ...) or, on the responding side, nothing came up within ``establish_timeout``;
- ``alarm``    ``alarm_after`` consecutive failures (draft section 3.4: human interaction);
- ``removed``  the peer left the desired set (connection unloaded, SAs deleted).

Failures follow section 3.4 like the static runtime: retry after ``min_interval``, then doubling up
to ``max_interval``; the alarm once; any ``up`` resets all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address
from typing import Final

from ce_runtime.ike.config import CHILD

__all__ = [
    "LIVE_CHILD",
    "LIVE_IKE",
    "ChildView",
    "ConnView",
    "IkeSaView",
    "PeerTracker",
    "Phase",
    "RetryPolicy",
    "TunnelEvent",
    "classify_failure",
    "conn_view",
    "duplicates",
]


class Phase(Enum):
    CONNECTING = "connecting"  # loaded, waiting for the first (or next) SA
    UP = "up"
    DOWN = "down"  # was up, is not; a retry is scheduled (initiator) or awaited (responder)
    FAILED = "failed"  # the last attempt failed; backing off


#: charon's states in which an SA still carries traffic. A rekey is make-before-break: while the
#: exchange runs the old CHILD_SA is REKEYING (then REKEYED until deleted) and the new one is not
#: INSTALLED yet; an IKE_SA being rekeyed is REKEYING and its children move to the new one at
#: the end. Counting only ESTABLISHED/INSTALLED reported a tunnel "down" whenever a poll fell into
#: that window (seen in the VM under load: a CHILD_SA rekey read as down, then up).
LIVE_IKE: Final = frozenset({"ESTABLISHED", "REKEYING", "REKEYED"})
LIVE_CHILD: Final = frozenset({"INSTALLED", "UPDATING", "REKEYING", "REKEYED"})


@dataclass(frozen=True, slots=True)
class ChildView:
    uniqueid: int
    state: str
    spi_in: str
    spi_out: str


@dataclass(frozen=True, slots=True)
class IkeSaView:
    uniqueid: int
    state: str
    initiator: bool
    children: tuple[ChildView, ...]

    @property
    def installed(self) -> tuple[ChildView, ...]:
        return tuple(c for c in self.children if c.state == "INSTALLED")

    @property
    def live(self) -> tuple[ChildView, ...]:
        """Children carrying traffic, a rekey's outgoing one included (:data:`LIVE_CHILD`)."""
        if self.state not in LIVE_IKE:
            return ()
        return tuple(c for c in self.children if c.state in LIVE_CHILD)


@dataclass(frozen=True, slots=True)
class ConnView:
    """One connection's SAs as charon lists them."""

    ike_sas: tuple[IkeSaView, ...] = ()

    @property
    def established(self) -> tuple[IkeSaView, ...]:
        return tuple(s for s in self.ike_sas if s.state == "ESTABLISHED")

    @property
    def up(self) -> bool:
        """Some CHILD_SA carries traffic, also in the middle of a CHILD_SA or IKE_SA rekey."""
        return any(s.live for s in self.ike_sas)

    @property
    def connecting(self) -> bool:
        return any(s.state in ("CREATED", "CONNECTING") for s in self.ike_sas)

    @property
    def spis(self) -> tuple[str, str] | None:
        """(in, out) of the CHILD_SA in use: the newest installed one of the kept IKE_SA; while a
        rekey runs (nothing installed there), the newest live one, i.e. still the old SPIs."""
        kept = _kept(self)
        if kept is not None and kept.installed:
            child = max(kept.installed, key=lambda c: c.uniqueid)
        else:
            live = [c for s in self.ike_sas for c in s.live]
            if not live:
                return None
            child = max(live, key=lambda c: c.uniqueid)
        return (child.spi_in, child.spi_out)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def conn_view(listed: Iterable[Mapping[str, object]], name: str) -> ConnView:
    """Reduce ``list-sas`` replies (``{ike_name: {...}}`` each, bytes values) to ``name``'s view."""
    sas: list[IkeSaView] = []
    for entry in listed:
        for ike_name, raw in entry.items():
            if ike_name != name or not isinstance(raw, Mapping):
                continue
            children: list[ChildView] = []
            child_sas = raw.get("child-sas", {})
            if isinstance(child_sas, Mapping):
                for child in child_sas.values():
                    if not isinstance(child, Mapping) or _text(child.get("name", "")) != CHILD:
                        continue
                    children.append(
                        ChildView(
                            uniqueid=int(_text(child.get("uniqueid", "0"))),
                            state=_text(child.get("state", "")),
                            spi_in=_text(child.get("spi-in", "")),
                            spi_out=_text(child.get("spi-out", "")),
                        )
                    )
            sas.append(
                IkeSaView(
                    uniqueid=int(_text(raw.get("uniqueid", "0"))),
                    state=_text(raw.get("state", "")),
                    initiator=_text(raw.get("initiator", "no")) == "yes",
                    children=tuple(sorted(children, key=lambda c: c.uniqueid)),
                )
            )
    return ConnView(tuple(sorted(sas, key=lambda s: s.uniqueid)))


def _kept(view: ConnView) -> IkeSaView | None:
    """The IKE_SA a pair keeps: established with a tunnel, ours as initiator first, then the oldest."""
    candidates = [s for s in view.established if s.installed] or list(view.established)
    if not candidates:
        return None
    return min(candidates, key=lambda s: (not s.initiator, s.uniqueid))


def duplicates(view: ConnView) -> list[tuple[str, int]]:
    """What the pair's designated initiator terminates: ("ike-id", n) and ("child-id", n) entries.

    Only ESTABLISHED IKE_SAs and INSTALLED CHILD_SAs count (a rekey's old SA is REKEYING/REKEYED
    and goes away by itself). Kept: :func:`_kept`'s IKE_SA and its oldest installed CHILD_SA.
    """
    kept = _kept(view)
    if kept is None:
        return []
    extra: list[tuple[str, int]] = [("ike-id", s.uniqueid) for s in view.established if s != kept]
    installed = kept.installed
    extra += [("child-id", c.uniqueid) for c in installed[:-1]] if len(installed) > 1 else []
    return extra


_FAILURES: Final = (
    ("AUTHENTICATION_FAILED", "auth-failed"),
    ("authentication of", "auth-failed"),
    ("MAC mismatched", "auth-failed"),  # the responder's AUTH did not verify with our key
    ("no shared key found", "auth-failed"),
    ("NO_PROPOSAL_CHOSEN", "no-proposal"),
    ("TS_UNACCEPTABLE", "ts-unacceptable"),
    ("giving up after", "unreachable"),
    ("peer not responding", "unreachable"),
)


def classify_failure(lines: Iterable[str], errmsg: str) -> str:
    """A short, secret-free reason for a failed initiation, from charon's control log lines."""
    text = list(lines)
    for needle, reason in _FAILURES:
        if needle == "authentication of":
            if any(needle in line and "failed" in line for line in text):
                return reason
            continue
        if any(needle in line for line in text):
            return reason
    if "timeout" in errmsg.lower():
        return "timeout"
    return "failed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    min_interval: float = 2.0
    max_interval: float = 300.0
    alarm_after: int = 6
    establish_timeout: float = 30.0  # responder: nothing up within this long counts as a failure

    def delay(self, failures: int) -> float:
        return float(min(self.max_interval, self.min_interval * 2 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class TunnelEvent:
    kind: str  # up | rekeyed | down | failed | alarm | removed
    peer: IPv4Address
    vpn_id: int
    at: float
    detail: str = ""
    spis: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"event": self.kind, "peer": str(self.peer), "vpn": self.vpn_id}
        out["at"] = round(self.at, 3)
        if self.detail:
            out["detail"] = self.detail
        if self.spis:
            out["spi_in"], out["spi_out"] = self.spis
        return out


@dataclass(slots=True)
class PeerTracker:
    """One peer's tunnel state; ``initiator`` says whether this side initiates and retries."""

    peer: IPv4Address
    vpn_id: int
    initiator: bool
    policy: RetryPolicy
    since: float
    phase: Phase = Phase.CONNECTING
    spis: tuple[str, str] | None = None
    failures: int = 0
    next_try: float = 0.0
    alarmed: bool = False
    in_flight: bool = False  # an initiation is running
    last_error: str = ""
    ups: int = 0
    events: list[TunnelEvent] = field(default_factory=list)

    def _event(self, kind: str, now: float, detail: str = "") -> None:
        self.events.append(TunnelEvent(kind, self.peer, self.vpn_id, now, detail, self.spis))

    def drain(self) -> list[TunnelEvent]:
        out, self.events = self.events, []
        return out

    def observe(self, view: ConnView, now: float) -> None:
        """charon's current SAs for this connection."""
        if view.up:
            spis = view.spis
            if self.phase != Phase.UP:
                self.phase, self.spis, self.ups = Phase.UP, spis, self.ups + 1
                self.failures, self.alarmed, self.last_error = 0, False, ""
                self.next_try = 0.0
                self._event("up", now)
            elif spis != self.spis:
                self.spis = spis
                self._event("rekeyed", now)
            return
        if self.phase == Phase.UP:
            self.phase, self.since = Phase.DOWN, now
            self._event("down", now)
            self.spis = None
            # Section 3.4: the retry comes after the minimum interval.
            self.next_try = now + self.policy.min_interval

    def failed(self, reason: str, now: float) -> None:
        self.failures += 1
        self.last_error = reason
        self.phase, self.since = Phase.FAILED, now
        self.next_try = now + self.policy.delay(self.failures)
        self._event("failed", now, reason)
        if self.failures >= self.policy.alarm_after and not self.alarmed:
            self.alarmed = True
            self._event("alarm", now, reason)

    def should_initiate(self, now: float, view: ConnView) -> bool:
        return (
            self.initiator
            and not self.in_flight
            and not view.up
            and not view.connecting
            and now >= self.next_try
        )

    def check_timeout(self, now: float) -> None:
        """The responding side: nothing came up within ``establish_timeout``: a failure."""
        if self.initiator or self.phase == Phase.UP or self.in_flight:
            return
        if now - self.since >= self.policy.establish_timeout and now >= self.next_try:
            self.failed("not established by the peer", now)
            self.since = now

    def status(self) -> dict[str, object]:
        return {
            "peer": str(self.peer),
            "vpn": self.vpn_id,
            "phase": self.phase.value,
            "initiator": self.initiator,
            "failures": self.failures,
            "alarmed": self.alarmed,
            "last_error": self.last_error,
            "ups": self.ups,
            "spi_in": self.spis[0] if self.spis else None,
            "spi_out": self.spis[1] if self.spis else None,
        }
