"""The reconciler on a model kernel: convergence, idempotence, backoff then alarm, hooks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ce_runtime.keying import EpochFile, StaticKeying
from ce_runtime.model import AddSa, KernelState, Op, apply_to_model
from ce_runtime.runtime import Backoff, Reconciler, RuntimeConfig, VpnConfig, tunnel_mtu

L = IPv4Address("192.0.2.1")
P = IPv4Address("192.0.2.2")
Q = IPv4Address("192.0.2.3")


class ModelKernel:
    def __init__(self) -> None:
        self.state = KernelState()
        self.fail_peer: IPv4Address | None = None

    def read(self) -> KernelState:
        return self.state

    def apply(self, op: Op) -> None:
        if self.fail_peer is not None and isinstance(op, AddSa) and self.fail_peer in (op.sa.src, op.sa.dst):
            raise OSError(22, "Invalid argument")
        self.state = apply_to_model(self.state, [op])


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, IPv4Address]] = []

    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        self.events.append((event, link, vpn_id, peer))


def _setup(tmp_path: Path) -> tuple[ModelKernel, Hooks, Reconciler]:
    kernel, hooks = ModelKernel(), Hooks()
    keying = StaticKeying({7: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    backoff = Backoff(min_interval=5, max_interval=40, alarm_after=4)
    return kernel, hooks, Reconciler(kernel, keying, hooks, backoff=backoff)


def test_converges_and_is_idempotent(tmp_path: Path) -> None:
    kernel, hooks, rec = _setup(tmp_path)
    config = RuntimeConfig(L, (VpnConfig(7, frozenset({P, Q}), ((IPv4Network("10.2.0.0/24"), P),)),))
    first = rec.reconcile(config, now=0)
    assert not first.failed
    assert {link.remote for link in kernel.state.links} == {P, Q}
    assert {link.mtu for link in kernel.state.links} == {tunnel_mtu(1500)} == {1446}
    assert len(kernel.state.policies) == 4
    assert len(kernel.state.routes) == 1
    assert sorted(e[0] for e in hooks.events) == ["up", "up"]
    assert rec.reconcile(config, now=1).applied == []
    # P removed: its link, SAs and policies go, a "down" hook fires.
    rec.reconcile(RuntimeConfig(L, (VpnConfig(7, frozenset({Q})),)), now=2)
    assert {link.remote for link in kernel.state.links} == {Q}
    assert all(P not in (sa.src, sa.dst) for sa in kernel.state.sas)
    assert ("down", "cec0000202", -1, P) in hooks.events


def test_backoff_then_alarm(tmp_path: Path) -> None:
    kernel, hooks, rec = _setup(tmp_path)
    kernel.fail_peer = P
    config = RuntimeConfig(L, (VpnConfig(7, frozenset({P, Q})),))
    tries: list[float] = []
    now = 0.0
    while not any(e[0] == "alarm" for e in hooks.events) and now < 1000:
        report = rec.reconcile(config, now)
        if report.failed:
            tries.append(now)
        now += 1
    assert tries == [0, 5, 15, 35]  # 5, then doubling: 10, 20 (capped at 40)
    assert ("alarm", "cec0000202", 7, P) in hooks.events
    assert rec.counters["alarms"] == 1
    assert {link.remote for link in kernel.state.links} == {Q}  # the healthy peer was not held back
    kernel.fail_peer = None
    rec.reconcile(config, now + 100)
    assert {link.remote for link in kernel.state.links} == {P, Q}
    assert rec.backoff[P].failures == 0
