"""The PPP CE's events become the DHCP client's (``dhcp_client.events``), the ones ce_runtime consumes."""

from __future__ import annotations

from ipaddress import IPv4Address

from test_ppp_negotiation import CE_ADDRESS, DNS1, DNS2, NAS_ADDRESS, Wire, make_pair, opened

from dhcp_client.events import (
    INFINITE_LEASE,
    ClientEvent,
    LeaseBound,
    LeaseLost,
    LeaseRenewed,
    VpnPeersChanged,
)
from ipcp.client_events import PppClientEvents
from ipcp.events import AddressLearned, DnsLearned
from ipcp.fsm import State

A = IPv4Address


def translate(wire: Wire, adapter: PppClientEvents) -> list[ClientEvent]:
    out = [e for event in wire.ce_events for e in adapter.feed(event, wire.now)]
    wire.ce_events.clear()
    return out


def test_bind_change_and_loss_reach_the_runtime_as_dhcp_events() -> None:
    peers = {7: [A("10.9.0.1"), A("10.9.0.2")], 12: [A("10.12.0.1")]}
    wire = opened(Wire(*make_pair(vpn_peers=lambda _ce: peers)))
    adapter = PppClientEvents()
    first = translate(wire, adapter)
    bound = [e for e in first if isinstance(e, LeaseBound)]
    assert len(bound) == 1
    lease = bound[0].lease
    assert (lease.address, lease.server_id, lease.dns_servers) == (CE_ADDRESS, NAS_ADDRESS, (DNS1, DNS2))
    assert lease.lease_time == INFINITE_LEASE
    assert lease.infinite
    assert [e for e in first if isinstance(e, VpnPeersChanged)] == [
        VpnPeersChanged(7, frozenset(peers[7]), frozenset(), frozenset(peers[7]), True),
        VpnPeersChanged(12, frozenset(peers[12]), frozenset(), frozenset(peers[12]), True),
    ]
    assert not any(isinstance(e, LeaseRenewed | LeaseLost) for e in first)

    # A peer added later (the NAS renegotiates IPCP) and a VPN left: peer events only.
    peers[7] = [*peers[7], A("10.9.0.3")]
    del peers[12]
    wire.nas.renegotiate_ipcp(wire.now)
    wire.run()
    assert translate(wire, adapter) == [
        VpnPeersChanged(7, frozenset({A("10.9.0.3")}), frozenset(), frozenset(peers[7]), True),
        VpnPeersChanged(12, frozenset(), frozenset({A("10.12.0.1")}), frozenset(), False),
    ]
    assert adapter.peers == {7: frozenset(peers[7])}

    # The line drops and comes back: everything is lost, then bound and learned again.
    wire.ce.line_down(wire.now)
    wire.ce_events += wire.ce.next_events()
    lost = translate(wire, adapter)
    assert lost == [
        VpnPeersChanged(7, frozenset(), frozenset(peers[7]), frozenset(), False),
        LeaseLost(CE_ADDRESS, "link-down"),
    ]
    wire.ce.lcp.up(wire.now)
    wire.run()
    assert (wire.ce.ipcp.state, wire.nas.ipcp.state) == (State.OPENED, State.OPENED)
    again = translate(wire, adapter)
    assert [type(e) for e in again] == [LeaseBound, VpnPeersChanged]
    assert adapter.lease is not None
    assert adapter.lease.dns_servers == (DNS1, DNS2)


def test_dns_change_renews_and_address_change_renumbers() -> None:
    adapter = PppClientEvents()
    assert adapter.feed(DnsLearned(DNS1, None), 1.0) == []  # no address yet: remembered
    (bound,) = adapter.feed(AddressLearned(CE_ADDRESS, None), 1.0)
    assert isinstance(bound, LeaseBound)
    assert (bound.lease.server_id, bound.lease.dns_servers) == (A("0.0.0.0"), (DNS1,))
    (renewed,) = adapter.feed(DnsLearned(DNS1, DNS2), 2.0)
    assert isinstance(renewed, LeaseRenewed)
    assert renewed.lease.dns_servers == (DNS1, DNS2)
    lost, rebound = adapter.feed(AddressLearned(A("100.64.0.9"), NAS_ADDRESS), 3.0)
    assert lost == LeaseLost(CE_ADDRESS, "renumbered")
    assert isinstance(rebound, LeaseBound)
    assert rebound.lease.address == A("100.64.0.9")
