"""Prometheus metrics in the text exposition format 0.0.4, rendered from the engine's state.

Nothing here is updated on the hot path: the engine already counts everything in
``engine.counters`` (``received:DHCPDISCOVER``, ``sent:DHCPACK``, ``dropped:auth_failed``,
``forcerenew:gave_up``...), and a scrape turns those counters and a few gauges read from
the engine's tables into text. Metrics (all prefixed ``ceautoconf_``):

=====================================  =========  ===========================================
``messages_received_total{type}``      counter    client messages by DHCP message type
``messages_sent_total{type}``          counter    replies and FORCERENEWs by type
``messages_dropped_total{reason}``     counter    messages dropped unanswered, by reason
``forcerenew_total{outcome}``          counter    FORCERENEW ``sent`` / ``gave_up`` / ``no_lease`` /
                                                  ``cannot_authenticate``
``quarantine_started_total``           counter    clients put in quarantine (draft-lee section 6)
``engine_events_total{event}``         counter    every other engine counter (``lease:bound``...)
``leases{state}``                      gauge      leases by state (``bound`` means active now)
``quarantined_clients``                gauge      clients quarantined now
``forcerenew_outstanding``             gauge      FORCERENEWs waiting for their CE to come back
``vpns`` / ``ces``                     gauge      size of the VPN directory
``driver_total{what}``                 counter    the UDP driver's counters, when it has them
``store_commits_total``                counter    store commits (from :class:`TimedStore`)
``store_commit_seconds``               histogram  store commit latency (from :class:`TimedStore`)
=====================================  =========  ===========================================
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from dhcp_server.actions import Write
from dhcp_server.engine import ServerEngine
from dhcp_server.model import LeaseState
from dhcp_server.store import Snapshot, Store

__all__ = ["CONTENT_TYPE", "TimedStore", "lease_states", "render_metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "ceautoconf_"

#: Message types that always have a sample (0 before the first), so rate() works from the start.
_RECEIVED_TYPES: Final = ("DHCPDISCOVER", "DHCPREQUEST", "DHCPDECLINE", "DHCPRELEASE", "DHCPINFORM")
_SENT_TYPES: Final = ("DHCPOFFER", "DHCPACK", "DHCPNAK", "DHCPFORCERENEW")
_FORCERENEW_OUTCOMES: Final = ("sent", "gave_up", "no_lease", "cannot_authenticate")
#: Commit latency buckets, in seconds: an fsync on an SSD is ~0.1-2 ms, on a disk ~10 ms.
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def lease_states(engine: ServerEngine, now: float) -> dict[str, int]:
    """Leases by state; a BOUND lease past its expiry counts as ``expired``."""
    counts = dict.fromkeys((s.value for s in LeaseState), 0)
    for lease in engine.leases.leases():
        state = lease.state
        if state is LeaseState.BOUND and not lease.active(now):
            state = LeaseState.EXPIRED
        counts[state.value] += 1
    return counts


class TimedStore:
    """A :class:`~dhcp_server.store.Store` wrapper that counts commits and times them.

    Wrap the store the driver commits to (``ServerDriver(engine, TimedStore(store))``) and
    pass it to :func:`render_metrics`. ``commit`` may run in the driver's worker thread.
    """

    def __init__(self, store: Store, clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self._clock = clock if clock is not None else time.perf_counter
        self._lock = threading.Lock()
        self.commits = 0
        self.failures = 0
        self.writes = 0
        self.seconds = 0.0
        self._buckets = [0] * len(_BUCKETS)

    def load(self) -> Snapshot:
        return self.store.load()

    def commit(self, writes: Sequence[Write]) -> None:
        start = self._clock()
        try:
            self.store.commit(writes)
        except BaseException:
            with self._lock:
                self.failures += 1
            raise
        elapsed = self._clock() - start
        with self._lock:
            self.commits += 1
            self.writes += len(writes)
            self.seconds += elapsed
            index = bisect.bisect_left(_BUCKETS, elapsed)
            if index < len(self._buckets):
                self._buckets[index] += 1

    def close(self) -> None:
        self.store.close()

    def snapshot(self) -> tuple[int, int, int, float, list[int]]:
        """commits, failures, writes, total seconds, cumulative bucket counts."""
        with self._lock:
            cumulative, total = [], 0
            for count in self._buckets:
                total += count
                cumulative.append(total)
            return self.commits, self.failures, self.writes, self.seconds, cumulative


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        help_text = help_.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if labels:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{PREFIX}{name}{{{rendered}}} {_number(value)}")
        else:
            self.lines.append(f"{PREFIX}{name} {_number(value)}")

    def labelled(
        self, name: str, kind: str, help_: str, label: str, values: Iterable[tuple[str, float]]
    ) -> None:
        self.family(name, kind, help_)
        for key, value in sorted(values):
            self.sample(name, value, {label: key})

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _split(counters: Mapping[str, int]) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        group, sep, name = key.partition(":")
        if not sep:
            group, name = "", key
        groups.setdefault(group, {})[name] = value
    return groups


def render_metrics(
    engine: ServerEngine,
    now: float,
    *,
    driver_counters: Mapping[str, int] | None = None,
    store: TimedStore | None = None,
) -> str:
    """The text exposition (format 0.0.4) of the engine's counters and gauges at ``now``."""
    groups = _split(Counter(engine.counters))
    w = _Writer()

    received = dict.fromkeys(_RECEIVED_TYPES, 0) | groups.pop("received", {})
    w.labelled(
        "messages_received_total", "counter", "Client messages received, by DHCP type.", "type",
        received.items(),
    )  # fmt: skip
    sent = dict.fromkeys(_SENT_TYPES, 0) | groups.pop("sent", {})
    w.labelled("messages_sent_total", "counter", "Messages sent, by DHCP type.", "type", sent.items())
    w.labelled(
        "messages_dropped_total", "counter", "Messages dropped without an answer, by reason.", "reason",
        groups.pop("dropped", {}).items(),
    )  # fmt: skip

    outcomes = dict.fromkeys(_FORCERENEW_OUTCOMES, 0) | groups.pop("forcerenew", {})
    outcomes["sent"] = sent.get("DHCPFORCERENEW", 0)
    w.labelled("forcerenew_total", "counter", "FORCERENEW outcomes (RFC 3203).", "outcome", outcomes.items())
    quarantine = groups.pop("quarantine", {})
    w.family("quarantine_started_total", "counter", "Clients put in quarantine for flooding.")
    w.sample("quarantine_started_total", quarantine.pop("started", 0))

    others = [
        (f"{group}:{name}" if group else name, v) for group, d in groups.items() for name, v in d.items()
    ]
    others += [(f"quarantine:{name}", v) for name, v in quarantine.items()]
    w.labelled("engine_events_total", "counter", "Other engine counters.", "event", others)

    w.labelled(
        "leases", "gauge", "Leases by state (bound: active now).", "state",
        lease_states(engine, now).items(),
    )  # fmt: skip
    w.family("quarantined_clients", "gauge", "Clients quarantined now.")
    w.sample("quarantined_clients", len(engine.quarantine.quarantined(now)))
    w.family("forcerenew_outstanding", "gauge", "FORCERENEWs waiting for their CE to come back.")
    w.sample("forcerenew_outstanding", len(engine.forcerenews.outstanding()))
    directory = engine.directory
    w.family("vpns", "gauge", "VPNs in the directory.")
    w.sample("vpns", len(directory.vpns))
    w.family("ces", "gauge", "CEs in the directory.")
    w.sample("ces", len(directory.ces))

    if driver_counters is not None:
        w.labelled(
            "driver_total", "counter", "UDP driver counters (datagrams, commits, send errors...).", "what",
            driver_counters.items(),
        )  # fmt: skip
    if store is not None:
        commits, failures, writes, seconds, cumulative = store.snapshot()
        w.family("store_commits_total", "counter", "Store commits (batches made durable).")
        w.sample("store_commits_total", commits)
        w.family("store_commit_failures_total", "counter", "Store commits that failed.")
        w.sample("store_commit_failures_total", failures)
        w.family("store_writes_total", "counter", "Writes made durable by store commits.")
        w.sample("store_writes_total", writes)
        w.family("store_commit_seconds", "histogram", "Store commit latency in seconds.")
        for bound, count in zip(_BUCKETS, cumulative, strict=True):
            w.sample("store_commit_seconds_bucket", count, {"le": _number(bound)})
        w.sample("store_commit_seconds_bucket", commits, {"le": "+Inf"})
        w.sample("store_commit_seconds_sum", seconds)
        w.sample("store_commit_seconds_count", commits)
    return w.text()
