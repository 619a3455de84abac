"""The planner against a model kernel: random desired x actual states (ours and foreign objects).

Applying the plan yields exactly the desired objects among ours, leaves every foreign object as
it was, and a second plan is empty (idempotence). VRF devices (section 2.2) are in the mix: ours
(links enslaved to them, routes in their tables), foreign ones, and ours with someone else's
device (a LAN interface) enslaved, which is never deleted.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.model import (
    AddLink,
    AddPolicy,
    AddSa,
    AddVrf,
    DelSa,
    DelVrf,
    KernelState,
    LinkSpec,
    Ownership,
    RouteSpec,
    VrfSpec,
    apply_to_model,
    plan,
)
from ce_runtime.runtime import link_name, tunnel_mtu, vrf_spec
from ce_runtime.xfrm import Direction, PolicySpec, SaSpec

OWNER = Ownership()
LOCAL = IPv4Address("192.0.2.1")
PEERS = [IPv4Address(f"192.0.2.{i}") for i in range(2, 8)]
FOREIGN_PEERS = [IPv4Address(f"198.51.100.{i}") for i in range(2, 6)]

peers = st.sampled_from(PEERS)
keys = st.binary(min_size=36, max_size=36)
VRF_NAMES = ["vpnA", "vpnB"]
# Our VRFs: a name, one of two tables (a table change replaces the device), up or down, sealed
# (its unreachable default route present) or not.
our_vrfs = st.builds(
    lambda name, table, up, sealed: VrfSpec(name, table, f"ce-autoconf vrf table={table}", up, sealed),
    st.sampled_from(VRF_NAMES),
    st.sampled_from([1001, 1002]),
    st.booleans(),
    st.booleans(),
)


@st.composite
def owned_pair(draw: st.DrawFn, peer: IPv4Address) -> KernelState:
    """Everything of ours for one peer, with random keys/SPIs/MTU (so actual and desired differ)."""
    reqid = OWNER.reqid_base | draw(st.integers(0, 3))
    # The kernel keys SAs by (destination, SPI): inbound SPIs of different peers differ (keying ensures it).
    spi_out = draw(st.integers(0x100, 0x103))
    spi_in = 0x100 + 4 * peer.packed[3] + draw(st.integers(0, 3))
    if draw(st.booleans()):  # static keying: our SAs and the policies that require them
        sas = {
            SaSpec(LOCAL, peer, spi_out, reqid, draw(keys)),
            SaSpec(peer, LOCAL, spi_in, reqid, draw(keys)),
        }
        policies = {
            PolicySpec(LOCAL, peer, Direction.OUT, reqid, OWNER.priority),
            PolicySpec(peer, LOCAL, Direction.IN, reqid, OWNER.priority),
        }
    else:  # IKE keying: charon's SAs and policies (not ours), our guards
        sas = set()
        policies = {PolicySpec.guard(peer, d, OWNER.guard_priority) for d in (Direction.OUT, Direction.IN)}
    name = link_name(peer)
    mtu = draw(st.sampled_from([tunnel_mtu(1500), 1400]))
    alias = f"ce-autoconf vpn={reqid & 0xFF} peer={peer}"
    vrf = draw(st.none() | our_vrfs)
    link = LinkSpec(
        name, LOCAL, peer, mtu, alias, up=draw(st.booleans()), vrf=None if vrf is None else vrf.name
    )
    table = 254 if vrf is None else vrf.table
    routes = (
        {RouteSpec(IPv4Network(f"10.{peer.packed[3]}.0.0/24"), name, table)} if draw(st.booleans()) else set()
    )
    vrfs = frozenset() if vrf is None else frozenset({vrf})
    return KernelState(frozenset({link}), frozenset(sas), frozenset(policies), frozenset(routes), vrfs)


@st.composite
def owned_state(draw: st.DrawFn) -> KernelState:
    chosen = draw(st.sets(peers, max_size=len(PEERS)))
    parts = [draw(owned_pair(p)) for p in sorted(chosen)]
    # One device per VRF name (the first drawn wins), links and routes follow it; sometimes an
    # extra VRF of ours that no link uses (left over, to be removed).
    vrfs = {v.name: v for p in parts for v in p.vrfs}
    vrfs.update({v.name: v for v in draw(st.lists(our_vrfs, max_size=1)) if v.name not in vrfs})
    routes = {
        RouteSpec(r.dst, r.link, vrfs[link.vrf].table if link.vrf else 254)
        for p in parts
        for link in p.links
        for r in p.routes
    }
    return KernelState(
        frozenset(x for p in parts for x in p.links),
        frozenset(x for p in parts for x in p.sas),
        frozenset(x for p in parts for x in p.policies),
        frozenset(routes),
        frozenset(vrfs.values()),
    )


@st.composite
def actual_ours(draw: st.DrawFn) -> KernelState:
    """Our objects as dumped: a VRF of ours may also hold someone else's device (the LAN's)."""
    state = draw(owned_state())
    lan = draw(st.sets(st.sampled_from(VRF_NAMES)))
    vrfs = frozenset(
        dataclasses.replace(v, slaves=frozenset({"lan0"}) if v.name in lan else frozenset())
        for v in state.vrfs
    )
    return KernelState(state.links, state.sas, state.policies, state.routes, vrfs)


@st.composite
def foreign_state(draw: st.DrawFn) -> KernelState:
    """Objects that are not ours: other reqids, other priorities, links without our alias or prefix."""
    links, sas, policies = set(), set(), set()
    vrfs = {
        VrfSpec("red", 10, "", slaves=frozenset({"tun0"})),  # someone else's VRF, with someone else's link
        VrfSpec("blue", 1001, "ce-autoconf? no", up=False),  # our table even: not ours without our alias
    }
    vrfs = set(draw(st.sets(st.sampled_from(sorted(vrfs, key=repr)))))
    for i, peer in enumerate(draw(st.sets(st.sampled_from(FOREIGN_PEERS)))):
        links.add(
            draw(
                st.sampled_from(
                    [
                        LinkSpec(f"tun{i}", LOCAL, peer, 1480, "", vrf="red" if vrfs else None),
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
                        PolicySpec.guard(peer, Direction.IN, 10),  # a block policy, not our priority
                        PolicySpec(LOCAL, peer, Direction.OUT, 0xCF000001, 0xCF00),  # charon's
                    ]
                )
            )
        )
    return KernelState(frozenset(links), frozenset(sas), frozenset(policies), vrfs=frozenset(vrfs))


def _union(a: KernelState, b: KernelState) -> KernelState:
    return KernelState(
        a.links | b.links, a.sas | b.sas, a.policies | b.policies, a.routes | b.routes, a.vrfs | b.vrfs
    )


@settings(max_examples=400, deadline=None)
@given(owned_state(), actual_ours(), foreign_state())
def test_plan_converges_and_spares_foreign_objects(
    desired: KernelState, ours: KernelState, foreign: KernelState
) -> None:
    actual = _union(ours, foreign)
    ops = plan(desired, actual, OWNER)
    after = apply_to_model(actual, ops)
    # A VRF of ours holding someone else's device stays as it is when it is no longer wanted
    # (or wanted with another table): deleting it would release that device into provider space.
    want = {v.name: v for v in desired.vrfs}
    held = {v for v in ours.vrfs if v.slaves and (v.name not in want or want[v.name].shape != v.shape)}
    expected_vrfs = frozenset(v for v in desired.vrfs if v.name not in {h.name for h in held}) | held
    expected = _union(desired, foreign)
    assert after == KernelState(expected.links, expected.sas, expected.policies, expected.routes,
                                expected_vrfs | foreign.vrfs)  # fmt: skip
    assert {v.name: v.shape for v in after.vrfs if v in foreign.vrfs} == {
        v.name: v.shape for v in foreign.vrfs
    }
    assert not any(isinstance(op, (AddVrf, DelVrf)) and op.vrf in foreign.vrfs for op in ops)
    assert plan(desired, after, OWNER) == []


@given(owned_state())
def test_building_adds_sas_before_policies_before_links(desired: KernelState) -> None:
    ops = plan(desired, KernelState(), OWNER)
    kinds = [type(op) for op in ops]
    if AddPolicy in kinds and AddSa in kinds:
        assert max(i for i, k in enumerate(kinds) if k is AddSa) < min(
            i for i, k in enumerate(kinds) if k is AddPolicy
        )
    if AddLink in kinds and AddPolicy in kinds:
        assert max(i for i, k in enumerate(kinds) if k is AddPolicy) < min(
            i for i, k in enumerate(kinds) if k is AddLink
        )


def test_an_ike_peers_guards_come_before_its_link_and_go_after_it() -> None:
    """Fail-closed: while the link exists, ipip to and from the peer is blocked unless charon's
    policy (higher precedence) protects it."""
    peer = PEERS[0]
    link = LinkSpec(link_name(peer), LOCAL, peer, 1446, "ce-autoconf vpn=7 peer=x")
    guards = frozenset(PolicySpec.guard(peer, d, OWNER.guard_priority) for d in (Direction.OUT, Direction.IN))
    desired = KernelState(links=frozenset({link}), policies=guards)
    up, down = plan(desired, KernelState(), OWNER), plan(KernelState(), desired, OWNER)
    assert [type(op).__name__ for op in up] == ["AddPolicy", "AddPolicy", "AddLink"]
    assert [type(op).__name__ for op in down] == ["DelLink", "DelPolicy", "DelPolicy"]


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


def test_vrf_created_before_its_links_and_deleted_after_them() -> None:
    vrf = vrf_spec("vpn7", 1007)
    link = LinkSpec(link_name(PEERS[0]), LOCAL, PEERS[0], 1446, "ce-autoconf vpn=7 peer=x", vrf="vpn7")
    route = RouteSpec(IPv4Network("10.2.0.0/24"), link.name, 1007)
    desired = KernelState(links=frozenset({link}), routes=frozenset({route}), vrfs=frozenset({vrf}))
    ops = plan(desired, KernelState(), OWNER)
    assert [type(op).__name__ for op in ops] == ["AddVrf", "AddLink", "AddRoute"]
    down = plan(KernelState(), desired, OWNER)
    assert [type(op).__name__ for op in down] == ["DelLink", "DelVrf"]


def test_moving_a_link_into_a_vrf_moves_its_routes() -> None:
    plain = LinkSpec(link_name(PEERS[0]), LOCAL, PEERS[0], 1446, "ce-autoconf vpn=7 peer=x")
    in_vrf = LinkSpec(plain.name, LOCAL, PEERS[0], 1446, plain.alias, vrf="vpn7")
    main = RouteSpec(IPv4Network("10.2.0.0/24"), plain.name)
    vrf_route = RouteSpec(main.dst, plain.name, 1007)
    before = KernelState(links=frozenset({plain}), routes=frozenset({main}))
    desired = KernelState(
        links=frozenset({in_vrf}), routes=frozenset({vrf_route}), vrfs=frozenset({vrf_spec("vpn7", 1007)})
    )
    ops = plan(desired, before, OWNER)
    assert [type(op).__name__ for op in ops] == ["DelRoute", "AddVrf", "SetLink", "AddRoute"]
    assert apply_to_model(before, ops) == desired


def test_a_rekey_adds_the_new_outbound_sa_before_removing_the_old() -> None:
    old = SaSpec(LOCAL, PEERS[0], 0x80001000, OWNER.reqid_base, bytes(36))
    new = SaSpec(LOCAL, PEERS[0], 0x80002000, OWNER.reqid_base, b"\x01" * 36)
    assert plan(KernelState(sas=frozenset({new})), KernelState(sas=frozenset({old})), OWNER) == [
        AddSa(new),
        DelSa(old),
    ]


def test_a_vrf_table_change_recreates_the_vrf_and_re_adds_the_routes() -> None:
    link = LinkSpec(link_name(PEERS[0]), LOCAL, PEERS[0], 1446, "ce-autoconf vpn=7 peer=x", vrf="vpn7")
    dst = IPv4Network("10.2.0.0/24")
    before = KernelState(
        links=frozenset({link}),
        routes=frozenset({RouteSpec(dst, link.name, 1007)}),
        vrfs=frozenset({vrf_spec("vpn7", 1007)}),
    )
    desired = KernelState(
        links=frozenset({link}),
        routes=frozenset({RouteSpec(dst, link.name, 1008)}),
        vrfs=frozenset({vrf_spec("vpn7", 1008)}),
    )
    ops = plan(desired, before, OWNER)
    assert [type(op).__name__ for op in ops] == ["DelRoute", "DelVrf", "AddVrf", "SetLink", "AddRoute"]
    assert apply_to_model(before, ops) == desired
    # Same table, same name, but the VRF is re-created: the released link's routes come back too.
    same = KernelState(links=desired.links, routes=frozenset({RouteSpec(dst, link.name, 1007)}),
                       vrfs=frozenset({VrfSpec("vpn7", 1007, "ce-autoconf vrf (older alias)")}))  # fmt: skip
    target = KernelState(links=desired.links, routes=same.routes, vrfs=frozenset({vrf_spec("vpn7", 1007)}))
    assert apply_to_model(same, plan(target, same, OWNER)) == target


def test_an_unwanted_vrf_holding_the_lan_interface_is_left_alone() -> None:
    ours = VrfSpec("vpn7", 1007, "ce-autoconf vrf table=1007", slaves=frozenset({"lan0"}))
    assert plan(KernelState(), KernelState(vrfs=frozenset({ours})), OWNER) == []
    alone = VrfSpec("vpn7", 1007, "ce-autoconf vrf table=1007")
    assert plan(KernelState(), KernelState(vrfs=frozenset({alone})), OWNER) == [DelVrf(alone)]
