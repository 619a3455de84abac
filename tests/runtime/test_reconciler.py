"""The reconciler on a model kernel: convergence, idempotence, backoff then alarm, hooks."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ce_runtime.keying import EpochFile, StaticKeying
from ce_runtime.model import (
    AddLink,
    AddPolicy,
    AddSa,
    DelLink,
    DelPolicy,
    DelSa,
    KernelState,
    Op,
    apply_to_model,
)
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


class BatchModelKernel(ModelKernel):
    """Like the netlink adapter's ``apply_all``: every op of a batch is tried, one result each."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Op]] = []
        self.fail_spi: int | None = None

    def apply_all(self, ops: Sequence[Op]) -> list[Exception | None]:
        self.batches.append(list(ops))
        results: list[Exception | None] = []
        for op in ops:
            if isinstance(op, AddSa) and op.sa.spi == self.fail_spi:
                results.append(OSError(17, "File exists"))
                continue
            self.state = apply_to_model(self.state, [op])
            results.append(None)
        return results


def test_batches_keep_the_order_and_attribute_failures(tmp_path: Path) -> None:
    kernel, hooks = BatchModelKernel(), Hooks()
    keying = StaticKeying({7: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    rec = Reconciler(kernel, keying, hooks, backoff=Backoff(min_interval=5, max_interval=40, alarm_after=4))
    config = RuntimeConfig(L, (VpnConfig(7, frozenset({P, Q})),))
    # One inbound SA of P collides (say with another sender's SPI): only P is held back.
    p_inbound = keying.sas_for(7, L, P, 0xCE000007, []).inbound
    kernel.fail_spi = p_inbound[1].spi
    report = rec.reconcile(config, now=0)
    kinds = [{type(op) for op in batch} for batch in kernel.batches]
    assert kinds == [{AddSa}, {AddPolicy}, {AddLink}]  # SAs (both directions, both peers) first
    assert len(kernel.batches[0]) == 10
    assert [op for op, _ in report.failed] == [AddSa(p_inbound[1])]
    assert "File exists" in report.failed[0][1]
    assert rec.backoff[P].failures == 1
    assert all(
        P not in (op.policy.src, op.policy.dst) for op in kernel.batches[1] if isinstance(op, AddPolicy)
    )
    assert {link.remote for link in kernel.state.links} == {Q}
    assert [e[0] for e in hooks.events] == ["up"]
    kernel.fail_spi = None
    kernel.batches.clear()
    rec.reconcile(config, now=5)  # P's next try: only what P misses
    assert [len(b) for b in kernel.batches] == [1, 2, 1]
    assert {link.remote for link in kernel.state.links} == {P, Q}
    assert rec.backoff[P].failures == 0
    kernel.batches.clear()
    rec.reconcile(RuntimeConfig(L, (VpnConfig(7, frozenset()),)), now=6)
    kinds = [{type(op) for op in batch} for batch in kernel.batches]
    assert kinds == [{DelLink}, {DelPolicy}, {DelSa}]  # the reverse order when tearing down
    assert kernel.state == KernelState()
