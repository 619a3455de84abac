"""The planner against a model kernel: random desired x actual states (ours and foreign objects).

Applying the plan yields exactly the desired objects among ours, leaves every foreign object as
it was, and a second plan is empty (idempotence).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.model import (
    AddLink,
    AddPolicy,
    AddSa,
    DelSa,
    KernelState,
    LinkSpec,
    Ownership,
    RouteSpec,
    apply_to_model,
    plan,
)
from ce_runtime.runtime import link_name, tunnel_mtu
from ce_runtime.xfrm import Direction, PolicySpec, SaSpec

OWNER = Ownership()
LOCAL = IPv4Address("192.0.2.1")
PEERS = [IPv4Address(f"192.0.2.{i}") for i in range(2, 8)]
FOREIGN_PEERS = [IPv4Address(f"198.51.100.{i}") for i in range(2, 6)]

peers = st.sampled_from(PEERS)
keys = st.binary(min_size=36, max_size=36)


@st.composite
def owned_pair(draw: st.DrawFn, peer: IPv4Address) -> KernelState:
    """Everything of ours for one peer, with random keys/SPIs/MTU (so actual and desired differ)."""
    reqid = OWNER.reqid_base | draw(st.integers(0, 3))
    # The kernel keys SAs by (destination, SPI): inbound SPIs of different peers differ (keying ensures it).
    spi_out = draw(st.integers(0x100, 0x103))
    spi_in = 0x100 + 4 * peer.packed[3] + draw(st.integers(0, 3))
    sas = {SaSpec(LOCAL, peer, spi_out, reqid, draw(keys)), SaSpec(peer, LOCAL, spi_in, reqid, draw(keys))}
    policies = {
        PolicySpec(LOCAL, peer, Direction.OUT, reqid, OWNER.priority),
        PolicySpec(peer, LOCAL, Direction.IN, reqid, OWNER.priority),
    }
    name = link_name(peer)
    mtu = draw(st.sampled_from([tunnel_mtu(1500), 1400]))
    alias = f"ce-autoconf vpn={reqid & 0xFF} peer={peer}"
    link = LinkSpec(name, LOCAL, peer, mtu, alias, up=draw(st.booleans()))
    routes = {RouteSpec(IPv4Network(f"10.{peer.packed[3]}.0.0/24"), name)} if draw(st.booleans()) else set()
    return KernelState(frozenset({link}), frozenset(sas), frozenset(policies), frozenset(routes))


@st.composite
def owned_state(draw: st.DrawFn) -> KernelState:
    chosen = draw(st.sets(peers, max_size=len(PEERS)))
    parts = [draw(owned_pair(p)) for p in sorted(chosen)]
    return KernelState(
        frozenset(x for p in parts for x in p.links),
        frozenset(x for p in parts for x in p.sas),
        frozenset(x for p in parts for x in p.policies),
        frozenset(x for p in parts for x in p.routes),
    )


@st.composite
def foreign_state(draw: st.DrawFn) -> KernelState:
    """Objects that are not ours: other reqids, other priorities, links without our alias or prefix."""
    links, sas, policies = set(), set(), set()
    for i, peer in enumerate(draw(st.sets(st.sampled_from(FOREIGN_PEERS)))):
        links.add(
            draw(
                st.sampled_from(
                    [
                        LinkSpec(f"tun{i}", LOCAL, peer, 1480, ""),
                        LinkSpec(f"ce-x{i}", LOCAL, peer, 1480, "someone else"),  # our prefix, not our alias
                        LinkSpec(
                            f"gre{i}", LOCAL, peer, 1480, "ce-autoconf vpn=1"
                        ),  # our alias, not our prefix
                    ]
                )
            )
        )
        sas.add(
            SaSpec(LOCAL, peer, 0x4242 + i, draw(st.sampled_from([0, 5, OWNER.reqid_base - 1])), bytes(20))
        )
        policies.add(
            draw(
                st.sampled_from(
                    [
                        PolicySpec(
                            LOCAL, peer, Direction.OUT, 5, OWNER.priority
                        ),  # our priority, not our reqid
                        PolicySpec(
                            LOCAL, peer, Direction.OUT, OWNER.reqid_base, 10
                        ),  # our reqid, not priority
                    ]
                )
            )
        )
    return KernelState(frozenset(links), frozenset(sas), frozenset(policies))


def _union(a: KernelState, b: KernelState) -> KernelState:
    return KernelState(a.links | b.links, a.sas | b.sas, a.policies | b.policies, a.routes | b.routes)


@settings(max_examples=300, deadline=None)
@given(owned_state(), owned_state(), foreign_state())
def test_plan_converges_and_spares_foreign_objects(
    desired: KernelState, ours: KernelState, foreign: KernelState
) -> None:
    actual = _union(ours, foreign)
    ops = plan(desired, actual, OWNER)
    after = apply_to_model(actual, ops)
    assert after == _union(desired, foreign)
    assert plan(desired, after, OWNER) == []


@given(owned_state())
def test_building_adds_sas_before_policies_before_links(desired: KernelState) -> None:
    ops = plan(desired, KernelState(), OWNER)
    kinds = [type(op) for op in ops]
    if AddPolicy in kinds:
        assert max(i for i, k in enumerate(kinds) if k is AddSa) < min(
            i for i, k in enumerate(kinds) if k is AddPolicy
        )
    if AddLink in kinds and AddPolicy in kinds:
        assert max(i for i, k in enumerate(kinds) if k is AddPolicy) < min(
            i for i, k in enumerate(kinds) if k is AddLink
        )


def test_a_changed_key_replaces_the_sa() -> None:
    old = SaSpec(LOCAL, PEERS[0], 0x1000, OWNER.reqid_base, bytes(36))
    new = SaSpec(LOCAL, PEERS[0], 0x1000, OWNER.reqid_base, b"\x01" * 36)
    assert plan(KernelState(sas=frozenset({new})), KernelState(sas=frozenset({old})), OWNER) == [
        DelSa(old),
        AddSa(new),
    ]


def test_refuses_to_create_what_it_would_not_recognise() -> None:
    foreign_sa = SaSpec(LOCAL, PEERS[0], 0x1000, 5, bytes(36))
    with pytest.raises(ValueError, match="recognised"):
        plan(KernelState(sas=frozenset({foreign_sa})), KernelState(), OWNER)
