"""The client-to-runtime glue (ce_runtime.node) and liveness on a model kernel, with a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from ce_runtime.keying import EpochFile, StaticKeying
from ce_runtime.liveness import Health, Liveness, Transition
from ce_runtime.model import DelSa, KernelState, Op, apply_to_model
from ce_runtime.node import NodeError, NodeSettings, NodeState, TunnelNode, VpnSettings, load_node_settings
from ce_runtime.runtime import Backoff, link_name
from dhcp_client.events import Lease, LeaseBound, LeaseLost, LeaseRenewed, VpnPeersChanged

L = IPv4Address("10.66.0.100")
L2 = IPv4Address("10.66.0.150")
P = IPv4Address("10.66.0.101")
Q = IPv4Address("10.66.0.102")
SRV = IPv4Address("10.66.0.1")


def _lease(address: IPv4Address) -> Lease:
    return Lease(address, SRV, 0.0, 600, 300, 525)


def _peers(vpn_id: int, *peers: IPv4Address, before: frozenset[IPv4Address] = frozenset()) -> VpnPeersChanged:
    now = frozenset(peers)
    return VpnPeersChanged(vpn_id, now - before, before - now, now)


class ModelKernel:
    def __init__(self) -> None:
        self.state = KernelState()
        self.rounds = 0

    def read(self) -> KernelState:
        self.rounds += 1
        return self.state

    def apply(self, op: Op) -> None:
        self.state = apply_to_model(self.state, [op])

    def index(self, name: str) -> int:
        names = sorted(link.name for link in self.state.links)
        return 100 + names.index(name)  # ValueError when there is no such link


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, IPv4Address]] = []

    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        assert link == link_name(peer)
        self.events.append((event, peer))


class FakeHello:
    def __init__(self) -> None:
        self.sent: list[tuple[IPv4Address, IPv4Address, int]] = []
        self.inbox: list[tuple[IPv4Address, int]] = []
        self._pair = socket.socketpair()  # a real descriptor for the loop's reader; never readable

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def send(self, local: IPv4Address, peer: IPv4Address, ifindex: int) -> None:
        self.sent.append((local, peer, ifindex))

    def receive(self) -> list[tuple[IPv4Address, int]]:
        out, self.inbox = self.inbox, []
        return out

    def close(self) -> None:
        for sock in self._pair:
            sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _node(tmp_path: Path, **timing: Any) -> tuple[TunnelNode, ModelKernel, Hooks, FakeHello, Clock]:
    settings = NodeSettings(
        state_dir=tmp_path,
        vpns={100: VpnSettings(100, bytes(32), ((IPv4Network("10.3.0.0/24"), Q),))},
        debounce=0.01,
        interval=3600.0,
        dead_after=timing.pop("dead_after", 6.0),
        backoff=Backoff(min_interval=2.0, max_interval=8.0, alarm_after=3),
        **timing,
    )
    kernel, hooks, hello, clock = ModelKernel(), Hooks(), FakeHello(), Clock()
    keying = StaticKeying({100: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    node = TunnelNode(settings, lambda: kernel, keying, hooks, hello=hello, clock=clock)
    return node, kernel, hooks, hello, clock


def _remotes(kernel: ModelKernel) -> set[IPv4Address]:
    return {link.remote for link in kernel.state.links}


# -- NodeState ----------------------------------------------------------------------------------


def test_state_folds_events_into_the_runtime_input() -> None:
    settings = NodeSettings(Path("/nonexistent"), {100: VpnSettings(100, bytes(32))})
    state = NodeState()
    assert state.apply(_peers(100, P, Q))
    assert state.config(settings) is None  # no address yet: nothing is desired
    assert state.apply(LeaseBound(_lease(L)))
    config = state.config(settings)
    assert config is not None and config.local == L
    assert [v.peers for v in config.vpns] == [frozenset({P, Q})]
    assert not state.apply(LeaseRenewed(_lease(L)))  # same address: nothing to do
    assert state.apply(LeaseRenewed(_lease(L2)))  # a new address: every tunnel changes
    assert not state.apply(_peers(100, P, Q))
    assert state.apply(_peers(100, Q, before=frozenset({P, Q})))
    assert state.apply(_peers(200, P))  # a VPN without a secret: kept, but no tunnels
    config = state.config(settings)
    assert config is not None and [v.vpn_id for v in config.vpns] == [100]
    assert state.apply(VpnPeersChanged(100, frozenset(), frozenset({Q}), frozenset(), member=False))
    assert state.apply(LeaseLost(L2, "expired"))
    assert state.config(settings) is None


def test_state_drops_routes_that_would_leak_or_have_no_tunnel() -> None:
    routes = (
        (IPv4Network("10.3.0.0/24"), Q),
        (IPv4Network("10.66.0.0/16"), Q),
        (IPv4Network("10.9.0.0/24"), P),
    )
    settings = NodeSettings(Path("/nonexistent"), {100: VpnSettings(100, bytes(32), routes)})
    state = NodeState()
    state.apply(LeaseBound(_lease(L)))
    state.apply(_peers(100, Q, L))  # our own address in the list is not a peer
    config = state.config(settings)
    assert config is not None
    (vpn,) = config.vpns
    assert vpn.peers == {Q}
    assert vpn.routes == ((IPv4Network("10.3.0.0/24"), Q),)


# -- the adapter ----------------------------------------------------------------------------------


def test_events_drive_debounced_rounds_and_lease_loss_tears_down(tmp_path: Path) -> None:
    node, kernel, hooks, _, _ = _node(tmp_path)

    async def main() -> None:
        task = asyncio.create_task(node.run())
        # A burst (bind, then the INFORM's peers) makes one round.
        node.on_event(LeaseBound(_lease(L)))
        node.on_event(_peers(100, P))
        node.on_event(_peers(100, P, Q, before=frozenset({P})))
        await asyncio.sleep(0.3)
        assert node.counters["rounds"] == 1
        assert _remotes(kernel) == {P, Q}
        assert {r.dst for r in kernel.state.routes} == {IPv4Network("10.3.0.0/24")}
        assert sorted(hooks.events) == [("up", P), ("up", Q)]
        # A peer leaves: its tunnel goes.
        node.on_event(_peers(100, Q, before=frozenset({P, Q})))
        await asyncio.sleep(0.3)
        assert _remotes(kernel) == {Q}
        assert ("down", P) in hooks.events
        # Our address changes: the tunnel is rebuilt from the new address, never left on the old one.
        node.on_event(LeaseRenewed(_lease(L2)))
        await asyncio.sleep(0.3)
        assert {(link.local, link.remote) for link in kernel.state.links} == {(L2, Q)}
        assert all(L not in (sa.src, sa.dst) for sa in kernel.state.sas)
        # The lease is lost: no tunnel may keep a stale address.
        node.on_event(LeaseLost(L2, "expired"))
        await asyncio.sleep(0.3)
        assert kernel.state == KernelState()
        node.stop()
        await task

    asyncio.run(main())
    node.close()


def test_stopping_keeps_tunnels_and_a_restart_changes_nothing(tmp_path: Path) -> None:
    node, kernel, _, _, _ = _node(tmp_path)

    async def run_once(n: TunnelNode) -> None:
        task = asyncio.create_task(n.run())
        n.on_event(LeaseBound(_lease(L)))
        n.on_event(_peers(100, P, Q))
        await asyncio.sleep(0.3)
        n.stop()
        await task

    asyncio.run(run_once(node))
    node.close()
    built = kernel.state
    assert _remotes(kernel) == {P, Q}
    # A new process (same state dir) on the same kernel: nothing to do.
    keying = StaticKeying({100: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    again = TunnelNode(node.settings, lambda: kernel, keying, Hooks(), clock=Clock())
    asyncio.run(run_once(again))
    again.close()
    assert again.last_report is not None and again.last_report.applied == []
    assert kernel.state == built


def test_a_restart_seeded_from_the_client_state_tears_nothing_down_before_the_inform(tmp_path: Path) -> None:
    node, kernel, _, _, _ = _node(tmp_path)

    async def until_idle(n: TunnelNode, *events: Any) -> None:
        task = asyncio.create_task(n.run())
        for event in events:
            n.on_event(event)
        await asyncio.sleep(0.3)
        n.stop()
        await task

    asyncio.run(until_idle(node, LeaseBound(_lease(L)), _peers(100, P, Q)))
    node.close()
    built = kernel.state
    keying = StaticKeying({100: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    again = TunnelNode(node.settings, lambda: kernel, keying, Hooks(), clock=Clock())
    lease = Lease(L, SRV, time.time() - 10, 600, 300, 525)
    again.seed(lease, {100: frozenset({P, Q})})
    asyncio.run(until_idle(again))  # no event at all: the remembered state is the desired state
    again.close()
    assert again.counters["rounds"] == 1
    assert again.last_report is not None and again.last_report.applied == []
    assert kernel.state == built
    # An expired remembered lease is no address: everything goes.
    gone = TunnelNode(node.settings, lambda: kernel, keying, Hooks(), clock=Clock())
    gone.seed(Lease(L, SRV, time.time() - 700, 600, 300, 525), {100: frozenset({P, Q})})
    asyncio.run(until_idle(gone))
    gone.close()
    assert kernel.state == KernelState()


def test_release_on_the_way_out_tears_down_before_stopping(tmp_path: Path) -> None:
    node, kernel, _, _, _ = _node(tmp_path)

    async def main() -> None:
        task = asyncio.create_task(node.run())
        node.on_event(LeaseBound(_lease(L)))
        node.on_event(_peers(100, P))
        await asyncio.sleep(0.3)
        assert _remotes(kernel) == {P}
        node.on_event(LeaseLost(L, "released"))  # the driver's release, then at once stop
        node.stop()
        await task

    asyncio.run(main())
    node.close()
    assert kernel.state == KernelState()


# -- liveness ---------------------------------------------------------------------------------------


def test_liveness_dead_repairs_with_backoff_then_alarm_then_alive() -> None:
    live = Liveness(dead_after=6.0, policy=Backoff(min_interval=2.0, max_interval=8.0, alarm_after=4))
    live.track([P, Q], now=0.0)
    events: list[tuple[float, Transition]] = []
    for t in range(40):
        now = float(t)
        live.heard(Q, now)  # Q answers all along
        events += [(now, x) for x in live.check(now)]
    assert [(n, x.event) for n, x in events if x.peer == Q] == [(0.0, "alive")]
    got = [(n, x.event) for n, x in events if x.peer == P]
    # Silent P: dead after its grace time, a repair at once, then after 2, 4, 8, 8 s; the 4th repair alarms.
    assert got == [
        (7.0, "dead"),
        (7.0, "repair"),
        (9.0, "repair"),
        (13.0, "repair"),
        (21.0, "repair"),
        (21.0, "alarm"),
        (29.0, "repair"),
        (37.0, "repair"),
    ]
    assert live.health(P) is Health.DEAD
    live.heard(P, 40.0)
    assert live.check(40.0) == [Transition(P, "alive")]
    assert live.check(45.0) == []
    # Silent again: dead again, with a fresh backoff (a repair at once, no alarm yet).
    assert [x.event for x in live.check(46.5) if x.peer == P] == ["dead", "repair"]


def test_liveness_counts_rising_sa_counters_as_life_but_not_the_first_reading() -> None:
    live = Liveness(dead_after=5.0)
    live.track([P], now=0.0)
    live.counters(P, {0x100: 17}, now=1.0)  # a baseline, maybe from before a restart
    assert live.check(6.0) == [Transition(P, "dead"), Transition(P, "repair")]
    live.counters(P, {0x100: 17}, now=7.0)
    assert live.health(P) is Health.DEAD
    live.counters(P, {0x100: 18}, now=8.0)
    assert live.check(8.0) == [Transition(P, "alive")]
    live.track([], now=9.0)
    assert live.health(P) is None


def test_liveness_counts_traffic_in_the_round_the_receivers_window_slides() -> None:
    """The old epoch's SA (and its large count) goes, the new one has counted a few packets: life.
    A per-peer sum (17 + 0 -> 3) would have read it as silence."""
    live = Liveness(dead_after=5.0)
    live.track([P], now=0.0)
    live.counters(P, {0x100: 17, 0x101: 0}, now=1.0)
    live.counters(P, {0x101: 3, 0x102: 0}, now=4.0)
    assert live.snapshot(4.0)[P] == (Health.PENDING, 0.0)
    live.counters(P, {0x101: 3, 0x103: 0}, now=6.0)  # SAs replaced, nothing counted: no life
    assert live.snapshot(6.0)[P] == (Health.PENDING, 2.0)


def test_node_sends_hellos_accepts_them_only_through_the_tunnel_and_reports(tmp_path: Path) -> None:
    node, kernel, hooks, hello, clock = _node(tmp_path, dead_after=5.0)

    async def main() -> None:
        task = asyncio.create_task(node.run())
        node.on_event(LeaseBound(_lease(L)))
        node.on_event(_peers(100, P, Q))
        await asyncio.sleep(0.3)
        node.stop()
        await task

    asyncio.run(main())
    assert set(node.indexes) == {P, Q}
    hello.sent.clear()
    assert not node.tick(clock.now)
    assert sorted(hello.sent) == sorted((L, peer, node.indexes[peer]) for peer in (P, Q))
    # Q's hello came through Q's tunnel; a "hello from P" arrived on another interface (forged in
    # provider space, or through Q's tunnel): refused.
    clock.now += 1
    hello.inbox = [(Q, node.indexes[Q]), (P, node.indexes[Q]), (P, 1)]
    node._on_hello()
    assert node.counters["hellos_received"] == 1
    assert node.counters["hellos_refused"] == 2
    node.tick(clock.now)
    clock.now += 5.5
    hello.inbox = [(Q, node.indexes[Q])]
    node._on_hello()
    assert node.tick(clock.now)  # P is dead: a repair round is asked for
    node._executor.submit(lambda: None).result()  # hooks run on the worker thread
    assert ("alive", Q) in hooks.events
    assert ("dead", P) in hooks.events
    status = node.status(clock.now)
    assert status["tunnels"][str(P)]["health"] == "dead"
    assert status["tunnels"][str(Q)]["health"] == "alive"
    assert status["counters"]["tunnels_alive"] == 1
    assert status["counters"]["dead_reports"] == 1
    # P's outbound SA deleted at P (what the VM test does by hand) shows here as silence; after a
    # repair P's traffic rises on our inbound SA counters: alive.
    inbound = [sa for sa in kernel.state.sas if sa.src == P]
    assert inbound
    kernel.apply(DelSa(inbound[0]))
    node.close()
    json.dumps(status)  # the status file's content


def test_runtime_settings_file(tmp_path: Path) -> None:
    secret = tmp_path / "vpn100.key"
    secret.write_text("00" * 32 + "\n")
    os.chmod(secret, 0o600)
    config = tmp_path / "runtime.toml"
    config.write_text(
        'state_dir = "st"\nhook = "/bin/true"\n[timing]\nhello_interval = 1.0\nalarm_after = 3\n'
        '[[vpn]]\nid = 100\nsecret_file = "vpn100.key"\n'
        'routes = [{ prefix = "10.3.0.0/24", peer = "10.66.0.102" }]\n'
    )
    settings = load_node_settings(config)
    assert settings.state_dir == tmp_path / "st"
    assert settings.hello_interval == 1.0
    assert settings.backoff.alarm_after == 3
    assert settings.vpns[100].routes == ((IPv4Network("10.3.0.0/24"), Q),)
    assert "00" * 16 not in repr(settings)  # the secret never shows
    os.chmod(secret, 0o644)
    with pytest.raises(NodeError, match="chmod 600"):
        load_node_settings(config)
    os.chmod(secret, 0o600)
    config.write_text(config.read_text() + "bogus = 1\n")
    with pytest.raises(NodeError, match="bogus"):
        load_node_settings(config)


def test_example_runtime_configuration_parses(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "runtime.toml"
    text = example.read_text().replace("/etc/ce-autoconf/vpn100.key", str(tmp_path / "k"))
    (tmp_path / "k").write_text("11" * 32)
    os.chmod(tmp_path / "k", 0o600)
    (tmp_path / "runtime.toml").write_text(text)
    settings = load_node_settings(tmp_path / "runtime.toml")
    assert list(settings.vpns) == [100]
    assert settings.dead_after == 7.0
