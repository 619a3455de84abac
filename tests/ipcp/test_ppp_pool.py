"""The NAS's address pool: one address per link, the same across a renegotiation,
back in the pool when the line goes down."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest
from test_ppp_negotiation import DNS1, NAS_ADDRESS, Wire, of_type, opened

from ipcp.events import AddressLearned, PeerConfigured
from ipcp.fsm import State
from ipcp.pool import AddressPool, PoolExhaustedError
from ipcp.roles import CeIpcpPolicy, NasConfig, NasIpcpPolicy
from ipcp.session import PppSession

A = IPv4Address


def session_pair(pool: AddressPool, link: str, seed: int) -> tuple[PppSession, PppSession, NasIpcpPolicy]:
    rng = random.Random(seed)
    nas_policy = NasIpcpPolicy(NasConfig(NAS_ADDRESS, primary_dns=DNS1, pool=pool, link=link))
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32))
    nas = PppSession(nas_policy, random32=lambda: rng.getrandbits(32))
    return ce, nas, nas_policy


def test_links_get_distinct_addresses_from_the_pool_and_return_them() -> None:
    pool = AddressPool(A("100.64.0.10"), A("100.64.0.11"))
    learned = []
    policies = []
    for n, link in enumerate(("ppp0", "ppp1")):
        ce, nas, policy = session_pair(pool, link, n)
        wire = opened(Wire(ce, nas))
        assert (ce.ipcp.state, nas.ipcp.state) == (State.OPENED, State.OPENED)
        [event] = of_type(wire.ce_events, AddressLearned)
        [configured] = of_type(wire.nas_events, PeerConfigured)
        assert isinstance(event, AddressLearned)
        assert isinstance(configured, PeerConfigured)
        assert configured.address == event.local
        learned.append(event.local)
        policies.append(policy)
    assert sorted(learned) == [A("100.64.0.10"), A("100.64.0.11")]
    assert len(pool) == 0
    with pytest.raises(PoolExhaustedError, match="ppp2"):
        _ = NasIpcpPolicy(NasConfig(NAS_ADDRESS, pool=pool, link="ppp2")).ce_address
    policies[0].link_down()
    assert len(pool) == 1
    assert NasIpcpPolicy(NasConfig(NAS_ADDRESS, pool=pool, link="ppp2")).ce_address == learned[0]


def test_a_link_keeps_its_address_while_it_holds_it() -> None:
    pool = AddressPool(A("100.64.0.10"), A("100.64.0.20"), exclude=[A("100.64.0.10")])
    assert pool.allocate("ppp0") == A("100.64.0.11")  # excluded addresses are never handed out
    assert pool.allocate("ppp0") == A("100.64.0.11")
    pool.release("ppp0")
    assert pool.allocate("ppp1") == A("100.64.0.12")  # a released address is the last reused


def test_fixed_and_pooled_addresses_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either"):
        NasConfig(NAS_ADDRESS)
    with pytest.raises(ValueError, match="either"):
        NasConfig(NAS_ADDRESS, A("100.64.0.2"), pool=AddressPool(A("100.64.0.10"), A("100.64.0.11")))
