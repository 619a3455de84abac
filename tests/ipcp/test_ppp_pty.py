"""The asyncio driver for real: our CE and our NAS on the two ends of an ``os.openpty()`` pair in raw
mode. LCP and IPCP open, the CE learns address, DNS and VPN peers, then terminates cleanly."""

from __future__ import annotations

import asyncio
import os
import random
import termios
from collections.abc import Callable
from ipaddress import IPv4Address

from ipcp.driver import make_raw, run_ppp
from ipcp.engine import NegotiationConfig
from ipcp.events import (
    AddressLearned,
    DnsLearned,
    LayerDown,
    LayerFinished,
    LayerUp,
    PeerConfigured,
    PppEvent,
    VpnPeersChanged,
    VpnPeersLearned,
)
from ipcp.frame import Protocol
from ipcp.roles import CeIpcpPolicy, NasConfig, NasIpcpPolicy
from ipcp.session import PppSession

A = IPv4Address
PEERS = {7: [A("10.9.0.1"), A("10.9.0.2")], 12: [IPv4Address(0x0A0C0000 + i) for i in range(70)]}
FAST = NegotiationConfig(restart_interval=0.5)


def test_make_raw_turns_off_the_line_discipline() -> None:
    master, slave = os.openpty()
    try:
        make_raw(slave)
        _iflag, _oflag, _cflag, lflag, *_ = termios.tcgetattr(slave)
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)
    finally:
        os.close(master)
        os.close(slave)


def test_ce_and_nas_over_a_real_pty_pair() -> None:
    asyncio.run(asyncio.wait_for(_ce_and_nas(), timeout=20))


async def _ce_and_nas() -> None:
    rng = random.Random(3)
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    nas_config = NasConfig(
        A("100.64.0.1"), A("100.64.0.2"), A("192.0.2.53"), A("192.0.2.54"), lambda _: PEERS
    )
    nas = PppSession(NasIpcpPolicy(nas_config), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    ce_events: list[PppEvent] = []
    nas_events: list[PppEvent] = []
    stop = asyncio.Event()

    def on_ce(event: PppEvent) -> None:
        ce_events.append(event)
        if isinstance(event, VpnPeersLearned):
            stop.set()  # everything learned: hang up cleanly

    master, slave = os.openpty()
    try:
        await asyncio.gather(
            run_ppp(ce, master, on_ce, stop=stop),
            run_ppp(nas, slave, nas_events.append),
        )
    finally:
        os.close(master)
        os.close(slave)

    assert AddressLearned(A("100.64.0.2"), A("100.64.0.1")) in ce_events
    assert DnsLearned(A("192.0.2.53"), A("192.0.2.54")) in ce_events
    learned = [e for e in ce_events if isinstance(e, VpnPeersLearned)]
    assert [e.as_dict() for e in learned] == [{k: frozenset(v) for k, v in PEERS.items()}]
    assert [e for e in nas_events if isinstance(e, PeerConfigured)] == [
        PeerConfigured(A("100.64.0.2"), tuple((k, frozenset(v)) for k, v in sorted(PEERS.items())))
    ]
    for events in (ce_events, nas_events):
        assert LayerUp(Protocol.LCP) in events
        assert LayerUp(Protocol.IPCP) in events
        assert LayerDown(Protocol.LCP) in events
        assert events[-1] == LayerFinished(Protocol.LCP)
    assert ce.finished
    assert nas.finished
    assert ce.counters.malformed_frames == nas.counters.malformed_frames == 0
    assert ce._deframer.counters.bad_fcs == nas._deframer.counters.bad_fcs == 0


def test_peer_added_later_reaches_the_ce_over_a_pty() -> None:
    asyncio.run(asyncio.wait_for(_renegotiation(), timeout=20))


async def _renegotiation() -> None:
    """The NAS renegotiates IPCP when its VPN database changes; the CE reports exactly the new peer."""
    rng = random.Random(4)
    peers = {7: [A("10.9.0.1"), A("10.9.0.2")]}
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    nas_config = NasConfig(A("100.64.0.1"), A("100.64.0.2"), A("192.0.2.53"), None, lambda _: peers)
    nas = PppSession(NasIpcpPolicy(nas_config), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    ce_events: list[PppEvent] = []
    stop = asyncio.Event()
    actions: asyncio.Queue[Callable[[PppSession, float], None]] = asyncio.Queue()

    def on_ce(event: PppEvent) -> None:
        ce_events.append(event)
        if isinstance(event, VpnPeersLearned) and len(event.as_dict()[7]) == 2:
            peers[7] = [*peers[7], A("10.9.0.3")]  # a CE joins VPN 7 at the NAS
            actions.put_nowait(lambda session, now: session.renegotiate_ipcp(now))
        elif isinstance(event, VpnPeersLearned):
            stop.set()

    master, slave = os.openpty()
    try:
        await asyncio.gather(
            run_ppp(ce, master, on_ce, stop=stop),
            run_ppp(nas, slave, lambda _e: None, actions=actions),
        )
    finally:
        os.close(master)
        os.close(slave)
    changed = [e for e in ce_events if isinstance(e, VpnPeersChanged)]
    assert changed[-1] == VpnPeersChanged(
        7, frozenset({A("10.9.0.3")}), frozenset(), frozenset(A(f"10.9.0.{i}") for i in (1, 2, 3))
    )
    assert [e for e in ce_events if isinstance(e, AddressLearned)] == [
        AddressLearned(A("100.64.0.2"), A("100.64.0.1"))
    ]  # reported once: the renegotiation changed only the peers
    assert ce.finished
    assert nas.finished
