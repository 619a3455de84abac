"""ce_runtime.liveness against a model, on random event sequences with a fake clock.

The model is the module's contract in a few lines: a peer is ALIVE after a check while its
last sign of life (a hello, or an inbound SA counter that rose or appeared non-zero) is at most
``dead_after`` old; DEAD once it has been silent longer than that (counted from when it was
first tracked); PENDING before. While dead, repairs follow the section 3.4 backoff (at once,
then doubling intervals up to the maximum) and the alarm comes with the ``alarm_after``-th
repair, once per dead period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.liveness import Health, Liveness
from ce_runtime.runtime import Backoff

PEERS = [IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")]
DEAD_AFTER = 5.0
POLICY = Backoff(min_interval=1.0, max_interval=4.0, alarm_after=3)

peers = st.sampled_from(PEERS)
counters = st.dictionaries(st.integers(0x100, 0x104), st.integers(0, 6), max_size=3)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
        st.tuples(st.just("heard"), peers),
        st.tuples(st.just("counters"), peers, counters),
        st.tuples(st.just("track"), st.sets(peers)),
        st.just(("check",)),
    ),
    max_size=60,
)


@dataclass
class _Model:
    since: float
    last: float | None = None
    baseline: dict[int, int] | None = None
    dead_since: float | None = None
    repairs: list[float] = field(default_factory=list)
    alarms: int = 0


@settings(max_examples=300, deadline=None)
@given(steps)
def test_liveness_follows_the_model(script: list[tuple[object, ...]]) -> None:
    live = Liveness(dead_after=DEAD_AFTER, policy=POLICY)
    model: dict[IPv4Address, _Model] = {}
    now = 0.0
    for step in script:
        match step:
            case ("wait", float(dt)):
                now += dt
            case ("heard", IPv4Address() as peer):
                live.heard(peer, now)
                if peer in model:
                    model[peer].last = now
            case ("counters", IPv4Address() as peer, dict(packets)):
                live.counters(peer, packets, now)
                m = model.get(peer)
                if m is not None:
                    old = m.baseline
                    if old is not None and any(n > old.get(spi, 0) for spi, n in packets.items()):
                        m.last = now
                    m.baseline = dict(packets)
            case ("track", set(tracked)):
                live.track(tracked, now)
                model = {p: model.get(p) or _Model(since=now) for p in tracked}
            case ("check",):
                _check(live, model, now)


def _check(live: Liveness, model: dict[IPv4Address, _Model], now: float) -> None:
    transitions = live.check(now)
    events = {p: [t.event for t in transitions if t.peer == p] for p in PEERS}
    assert not any(events[p] for p in PEERS if p not in model), "a forgotten peer reported"
    for peer, m in model.items():
        recent = m.last is not None and now - m.last <= DEAD_AFTER
        quiet = now - (m.since if m.last is None else max(m.since, m.last))
        got = events[peer]
        if recent:
            was_dead = m.dead_since is not None
            assert live.health(peer) is Health.ALIVE
            assert got in ([], ["alive"])
            m.dead_since, m.repairs, m.alarms = None, [], 0
            assert was_dead <= (got == ["alive"])  # back from the dead: reported
        elif quiet > DEAD_AFTER:
            assert live.health(peer) is Health.DEAD
            assert ("dead" in got) == (m.dead_since is None)
            if m.dead_since is None:
                m.dead_since = now
            if "repair" in got:
                if m.repairs:  # backoff: at once, then min_interval doubling to max_interval
                    gap = min(POLICY.max_interval, POLICY.min_interval * 2 ** (len(m.repairs) - 1))
                    assert now - m.repairs[-1] >= gap
                else:
                    assert now == m.dead_since
                m.repairs.append(now)
            else:
                assert m.repairs, "dead without the immediate repair"
            if "alarm" in got:
                m.alarms += 1
                assert len(m.repairs) == POLICY.alarm_after
            assert m.alarms <= 1
        else:
            assert live.health(peer) is Health.PENDING
            assert got == []
