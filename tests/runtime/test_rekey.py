"""Rekeying static keying's SAs before the 32-bit ESP sequence number runs out.

The pure decision (:func:`needs_rekey` inside :meth:`StaticKeying.sas_for`) driven by the packet
counters a kernel dump shows, and the reconciler on the model kernel: make-before-break, no
(key, SPI) ever installed twice, the receiver's window following the sender.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.keying import HARD_PACKETS, SEQ_LIMIT, EpochFile, StaticKeying, needs_rekey
from ce_runtime.model import AddSa, DelSa, KernelState, Op, apply_to_model
from ce_runtime.node import load_node_settings
from ce_runtime.runtime import Reconciler, RuntimeConfig, VpnConfig
from ce_runtime.xfrm import SaSpec, decode_sa, encode_sa

A = IPv4Address("192.0.2.1")
B = IPv4Address("192.0.2.2")
SECRET = bytes(range(32))
REQID = 0xCE000007


def test_threshold_and_the_hard_limit_stay_below_the_sequence_space() -> None:
    assert needs_rekey(50, 50) and not needs_rekey(49, 50)
    assert HARD_PACKETS < SEQ_LIMIT
    with pytest.raises(ValueError, match="rekey_packets"):
        StaticKeying({7: SECRET}, EpochFile("/nonexistent"), rekey_packets=HARD_PACKETS)


def test_the_hard_packet_limit_reaches_the_kernel_layout() -> None:
    sa = SaSpec(A, B, 0x80000001, REQID, bytes(36), hard_packets=HARD_PACKETS)
    body = bytes(encode_sa(sa).data[16:])
    # xfrm_usersa_info: selector (56), id (24), saddr (16), then lft: soft/hard byte, soft/hard packet.
    assert struct.unpack_from("=4Q", body, 96) == (2**64 - 1, 2**64 - 1, 2**64 - 1, HARD_PACKETS)
    assert decode_sa(body) == sa
    plain = dataclasses.replace(sa, hard_packets=None)
    assert struct.unpack_from("=Q", bytes(encode_sa(plain).data[16:]), 120) == (2**64 - 1,)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=30), st.integers(1, 100))
def test_sender_rekeys_exactly_when_the_counter_reaches_the_threshold(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int], threshold: int
) -> None:
    """Rounds in which the installed outbound SA shows random counters: it is kept below the
    threshold, replaced at or above it, and no (key, SPI) ever comes back."""
    path = tmp_path_factory.mktemp("k") / "epochs.json"
    keying = StaticKeying({7: SECRET}, EpochFile(path), rekey_packets=threshold)
    current = keying.sas_for(7, A, B, REQID, []).outbound
    used = {(current.key, current.spi)}
    for packets in counts:
        keying.flush()
        # A restarted process decides the same (the epochs file is all it remembers).
        if packets % 7 == 0:
            keying = StaticKeying({7: SECRET}, EpochFile(path), rekey_packets=threshold)
        dumped = dataclasses.replace(current, packets=packets)
        nxt = keying.sas_for(7, A, B, REQID, [dumped]).outbound
        if needs_rekey(packets, threshold):
            assert (nxt.key, nxt.spi) not in used
            used.add((nxt.key, nxt.spi))
        else:
            assert nxt == current
        assert nxt.hard_packets == HARD_PACKETS
        current = nxt


class ModelKernel:
    def __init__(self) -> None:
        self.state = KernelState()
        self.log: list[Op] = []

    def read(self) -> KernelState:
        return self.state

    def apply(self, op: Op) -> None:
        self.log.append(op)
        self.state = apply_to_model(self.state, [op])

    def count(self, spi: int, packets: int) -> None:
        """Traffic: the SA ``spi`` now shows ``packets`` in the dump."""
        self.state = dataclasses.replace(
            self.state,
            sas=frozenset(
                dataclasses.replace(sa, packets=packets) if sa.spi == spi else sa for sa in self.state.sas
            ),
        )


class NoHooks:
    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        pass


def _outbound(kernel: ModelKernel, src: IPv4Address) -> list[SaSpec]:
    return [sa for sa in kernel.state.sas if sa.src == src]


def test_rekey_is_make_before_break_and_the_receiver_follows(tmp_path: Path) -> None:
    ka, kb = ModelKernel(), ModelKernel()
    keys_a = StaticKeying({7: SECRET}, EpochFile(tmp_path / "a.json"), rekey_packets=50)
    keys_b = StaticKeying({7: SECRET}, EpochFile(tmp_path / "b.json"), rekey_packets=50)
    ra, rb = Reconciler(ka, keys_a, NoHooks()), Reconciler(kb, keys_b, NoHooks())
    ca, cb = (
        RuntimeConfig(A, (VpnConfig(7, frozenset({B})),)),
        RuntimeConfig(B, (VpnConfig(7, frozenset({A})),)),
    )
    ra.reconcile(ca, 0)
    rb.reconcile(cb, 0)
    (old,) = _outbound(ka, A)
    assert old in _outbound(kb, A)  # B holds A's epoch window
    ka.count(old.spi, 49)
    assert not ra.reconcile(ca, 1).applied  # below the threshold: nothing
    ka.count(old.spi, 50)
    ka.log.clear()
    report = ra.reconcile(ca, 2)
    assert not report.failed
    (new,) = _outbound(ka, A)
    assert new.spi != old.spi and new.key != old.key
    assert ka.log == [AddSa(new), DelSa(old)]  # the new SA is in before the old one goes
    assert keys_a.rekeys == 1
    assert new in _outbound(kb, A)  # B can decrypt it already: no loss
    # B sees packets on A's new epoch: its window slides, A's old epoch is removed at B.
    kb.count(new.spi, 3)
    assert not rb.reconcile(cb, 3).failed
    assert old not in _outbound(kb, A) and new in _outbound(kb, A)
    assert len(_outbound(kb, A)) == keys_b.window + 1  # the new epoch and the next ones
    assert not ra.reconcile(ca, 4).applied and not rb.reconcile(cb, 4).applied  # settled


def test_a_missed_rekey_never_wraps(tmp_path: Path) -> None:
    """The safety net: the kernel expired the SA at its hard limit (it is gone from the dump)."""
    kernel = ModelKernel()
    keying = StaticKeying({7: SECRET}, EpochFile(tmp_path / "e.json"))
    rec = Reconciler(kernel, keying, NoHooks())
    config = RuntimeConfig(A, (VpnConfig(7, frozenset({B})),))
    rec.reconcile(config, 0)
    (old,) = _outbound(kernel, A)
    assert old.hard_packets == HARD_PACKETS
    kernel.state = dataclasses.replace(kernel.state, sas=kernel.state.sas - {old})  # hard expiry
    rec.reconcile(config, 1)
    (new,) = _outbound(kernel, A)
    assert (new.key, new.spi) != (old.key, old.spi)


def test_rekey_threshold_in_the_runtime_settings(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("00" * 32)
    os.chmod(tmp_path / "k", 0o600)
    (tmp_path / "runtime.toml").write_text('rekey_packets = 1000\n[[vpn]]\nid = 7\nsecret_file = "k"\n')
    assert load_node_settings(tmp_path / "runtime.toml").rekey_packets == 1000
    (tmp_path / "runtime.toml").write_text('[[vpn]]\nid = 7\nsecret_file = "k"\n')
    assert load_node_settings(tmp_path / "runtime.toml").rekey_packets == 3 << 30
