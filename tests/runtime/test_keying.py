"""Static keying: per-pair, per-direction keys; no (key, SPI) installed twice across restarts."""

from __future__ import annotations

import dataclasses
import stat
from ipaddress import IPv4Address
from pathlib import Path

from ce_runtime.keying import EpochFile, StaticKeying, derive

A = IPv4Address("192.0.2.1")
B = IPv4Address("192.0.2.2")
SECRET = bytes(range(32))
REQID = 0xCE000007


def test_directions_pairs_epochs_and_vpns_get_distinct_keys() -> None:
    seen = {
        derive(SECRET, vpn, s, r, e)
        for vpn in (7, 8)
        for s, r in ((A, B), (B, A), (A, IPv4Address("192.0.2.3")))
        for e in range(3)
    }
    assert len({k for k, _ in seen}) == 18
    assert all(spi >= 0x80000000 for _, spi in seen)
    assert derive(SECRET, 7, A, B, 0) == derive(SECRET, 7, A, B, 0)


def test_both_ends_agree_without_talking(tmp_path: Path) -> None:
    ka = StaticKeying({7: SECRET}, EpochFile(tmp_path / "a.json"))
    kb = StaticKeying({7: SECRET}, EpochFile(tmp_path / "b.json"))
    a = ka.sas_for(7, A, B, REQID, [])
    b = kb.sas_for(7, B, A, REQID, [])
    assert a.outbound in b.inbound
    assert b.outbound in a.inbound


def test_missing_outbound_sa_is_never_reinstalled_with_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "epochs.json"
    keying = StaticKeying({7: SECRET}, EpochFile(path))
    first = keying.sas_for(7, A, B, REQID, []).outbound
    keying.flush()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Installed and still there: kept, even by a restarted process (its sequence number continues).
    assert keying.sas_for(7, A, B, REQID, [first]).outbound == first
    restarted = StaticKeying({7: SECRET}, EpochFile(path))
    assert restarted.sas_for(7, A, B, REQID, [first]).outbound == first
    # Gone (deleted by hand, reboot): a new epoch, in this process and after another restart.
    second = restarted.sas_for(7, A, B, REQID, []).outbound
    restarted.flush()
    again = StaticKeying({7: SECRET}, EpochFile(path)).sas_for(7, A, B, REQID, []).outbound
    keys = {(sa.key, sa.spi) for sa in (first, second, again)}
    assert len(keys) == 3


def test_receiver_window_slides_when_a_higher_epoch_carries_traffic(tmp_path: Path) -> None:
    sender = StaticKeying({7: SECRET}, EpochFile(tmp_path / "s.json"))
    receiver = StaticKeying({7: SECRET}, EpochFile(tmp_path / "r.json"), window=2)
    outs = [sender.sas_for(7, A, B, REQID, []).outbound for _ in range(3)]  # epochs 0, 1, 2
    window = receiver.sas_for(7, B, A, REQID, []).inbound
    assert [sa.spi for sa in window] == [sa.spi for sa in outs]
    used = dataclasses.replace(window[2], packets=5)
    slid = receiver.sas_for(7, B, A, REQID, [used]).inbound
    assert slid[0] == outs[2]
    assert outs[0] not in slid
    assert len(slid) == 3


def test_nothing_is_durable_before_flush(tmp_path: Path) -> None:
    path = tmp_path / "epochs.json"
    keying = StaticKeying({7: SECRET}, EpochFile(path))
    keying.sas_for(7, A, B, REQID, [])
    assert not path.exists()
    keying.flush()
    assert EpochFile(path).out == {"7/192.0.2.2": 0}


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    keying = StaticKeying({7: SECRET}, EpochFile(tmp_path / "e.json"))
    assert SECRET.hex() not in repr(keying)
    assert "key=" not in repr(keying.sas_for(7, A, B, REQID, []))
