"""ServerConfig.subnet_for (a binary search over sorted subnets) against the linear scan it replaces,
and the overlap check that the search relies on."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dhcp_server.model import ServerConfig, SubnetConfig

_NETWORKS = st.builds(
    lambda value, prefix: IPv4Network((value, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(12, 32),
)


def _config(networks: list[IPv4Network]) -> ServerConfig:
    subnets = tuple(SubnetConfig(network=n, pools=()) for n in networks)
    return ServerConfig(server_id=IPv4Address("192.0.2.1"), subnets=subnets)


@given(networks=st.lists(_NETWORKS, max_size=30), probes=st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_lookup_equals_the_scan_and_overlaps_are_refused(
    networks: list[IPv4Network], probes: list[int]
) -> None:
    overlapping = any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    if overlapping:
        with pytest.raises(ValueError, match="overlap"):
            _config(networks)
        return
    config = _config(networks)
    # probe random addresses and each subnet's edges and their neighbours
    edges = [int(n.network_address) for n in networks] + [int(n.broadcast_address) for n in networks]
    for value in [*probes, *edges, *(max(0, e - 1) for e in edges), *(min(2**32 - 1, e + 1) for e in edges)]:
        address = IPv4Address(value)
        expected = next((s for s in config.subnets if address in s.network), None)
        assert config.subnet_for(address) is expected
