"""The directory's per-VPN membership index against the definition it replaces (a scan of every CE)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from dhcp_server.directory import Directory, DirectoryError
from dhcp_server.model import CeRecord, VpnRecord

_NAMES = st.sampled_from([f"ce{i}" for i in range(6)])
_VPNS = st.frozensets(st.integers(1, 4), max_size=3)
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _NAMES, _VPNS, st.one_of(st.none(), st.integers(1, 8))),
        st.tuples(st.just("delete"), _NAMES, st.just(frozenset()), st.none()),
    ),
    max_size=40,
)


@given(steps=_STEPS)
def test_members_and_peers_follow_every_change(
    steps: list[tuple[str, str, frozenset[int], int | None]],
) -> None:
    directory = Directory(vpns=[VpnRecord(v, f"vpn{v}") for v in range(1, 5)])
    addresses = {f"ce{i}": IPv4Address(f"10.0.0.{i + 1}") for i in range(6)}
    for action, name, vpns, static in steps:
        try:
            if action == "put":
                address = None if static is None else IPv4Address(f"10.9.0.{static}")
                directory.put_ce(CeRecord(name, None, None, vpns, static_address=address))
            else:
                directory.delete_ce(name)
        except DirectoryError:
            continue
        ces = directory.ces
        for vpn_id in range(1, 6):
            expected = [ce for ce in ces.values() if vpn_id in ce.vpns]
            assert sorted(c.name for c in directory.members(vpn_id)) == sorted(c.name for c in expected)
        for ce in ces.values():
            peers = directory.peers_of(ce, lambda c: addresses[c.name])
            for vpn_id, found in peers.items():
                want = {addresses[o.name] for o in ces.values() if vpn_id in o.vpns and o.name != ce.name}
                assert found == want
