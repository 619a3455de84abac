"""State x input totality: random sequences of commands, timer firings and received messages
(valid, forged, replayed, mutated bytes) never raise, never leave the transition table, and
never yield an event from a message that was not signed with the CE's key."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import cast

from client_helpers import SERVER_ID, T0, client_config, forge, key, mac
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dhcp_client.events import AuthenticationFailure
from dhcp_client.machine import TRANSITIONS, ClientMachine, LocalProtocolError, State, Step
from dhcp_client.persistence import MemoryStateStore
from options import MessageType
from options.rfc3118 import Authentication
from options.rfc6704 import forcerenew_hmac
from options.strategies import hostile_bytes
from options.vpn import PeerCeBlock, vpn_specs

PEER_CE, VPN_SERVERS = vpn_specs()
ADDRESS = IPv4Address("10.77.0.60")

commands = st.tuples(st.just("cmd"), st.sampled_from(["start", "stop", "release", "conflict"]))
timers = st.tuples(st.just("timer"), st.floats(0, 900, allow_nan=False))
signing = st.sampled_from(["valid", "valid", "valid", "none", "wrong_key", "header_only", "stale", "nonce"])
kinds = st.sampled_from(
    [MessageType.DHCPOFFER, MessageType.DHCPACK, MessageType.DHCPNAK, MessageType.DHCPFORCERENEW]
)
xids = st.sampled_from(["current", "current", "inform", "other"])
peer_lists = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.lists(st.sampled_from([ADDRESS, SERVER_ID]), max_size=3)),
    max_size=3,
)
messages = st.tuples(st.just("msg"), kinds, signing, xids, peer_lists, st.booleans())
garbage = st.tuples(st.just("bytes"), hostile_bytes())
actions = st.lists(st.one_of(commands, timers, messages, garbage), max_size=40)


def build(machine: ClientMachine, action: tuple[object, ...], replay: int) -> tuple[bytes, bool]:
    """A server message for the machine's current transaction; and whether it is authentic."""
    _, kind, how, which, peers, with_servers = action
    assert isinstance(kind, MessageType)
    inform_xid = machine._inform_xid
    xid = {"current": machine.xid, "inform": inform_xid or 1, "other": machine.xid ^ 0x5A5A}[str(which)]
    extra: list[tuple[int, bytes]] = []
    if peers:
        listed = cast(list[tuple[int, bool, list[IPv4Address]]], peers)
        blocks = tuple(PeerCeBlock(v, a, tuple(p)) for v, a, p in listed)
        extra.append(PEER_CE.item(blocks))
    if with_servers:
        extra.append(VPN_SERVERS.item((SERVER_ID,)))
    auth: Authentication | None = None
    sign_key: bytes | None = None
    if how == "valid":
        auth, sign_key = Authentication.delayed(replay, 0x1001), key(1)
    elif how == "wrong_key":
        auth, sign_key = Authentication.delayed(replay, 0x1001), b"wrong"
    elif how == "header_only":
        auth = Authentication.delayed(replay)
    elif how == "stale":
        auth, sign_key = Authentication.delayed(1, 0x1001), key(1)
    elif how == "nonce":
        auth, sign_key = forcerenew_hmac(replay), bytes(16)
    lease_kind = kind in (MessageType.DHCPOFFER, MessageType.DHCPACK) and which != "inform"
    payload = forge(
        kind,
        xid=xid,
        chaddr=mac(1),
        yiaddr=ADDRESS if lease_kind else IPv4Address(0),
        extra=extra,
        auth=auth,
        sign_key=sign_key,
        lease_time=600 if lease_kind else None,
    )
    return payload, how == "valid"


def check_invariants(machine: ClientMachine, store: MemoryStateStore, before: State) -> None:
    assert machine.state in TRANSITIONS
    assert (
        machine.state is before or machine.state in TRANSITIONS[before] or _two_steps(before, machine.state)
    )
    if machine.informing:
        assert machine.state is State.BOUND
    if machine.state is not State.STOPPED:
        assert machine.get_timer() is not None, f"{machine.state} with no timer: it would hang"
    if machine.state in (State.BOUND, State.RENEWING, State.REBINDING):
        assert machine.lease is not None
    if store.saves:
        assert store.state == machine.snapshot()  # what is on disk is never behind


def _two_steps(a: State, b: State) -> bool:
    """One timer firing may go BOUND -> (lease expired) INIT, still through the table."""
    return any(b in TRANSITIONS[m] for m in TRANSITIONS[a])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["stopped", "selecting", "bound"]), actions, st.integers(0, 2**32 - 1))
def test_random_inputs_never_escape_the_table_nor_trust_a_stranger(
    prelude: str, sequence: list[tuple[object, ...]], seed: int
) -> None:
    store = MemoryStateStore()
    machine = ClientMachine(client_config(1), store, random.Random(seed))
    now = T0
    replay = 1 << 62
    if prelude != "stopped":
        machine.start(now)
        machine.handle_timer(now)
    if prelude == "bound":
        for kind in (MessageType.DHCPOFFER, MessageType.DHCPACK):
            replay += 1
            payload, _ = build(machine, ("msg", kind, "valid", "current", [], False), replay)
            machine.receive_datagram(payload, SERVER_ID, now)
        assert machine.state is State.BOUND
    for action in sequence:
        before = machine.state
        step: Step
        if action[0] == "cmd":
            method = {
                "start": machine.start,
                "stop": machine.stop,
                "release": machine.release,
                "conflict": machine.address_conflict,
            }[str(action[1])]
            try:
                step = method(now)
            except LocalProtocolError:
                assert machine.state is before
                continue
        elif action[0] == "timer":
            assert isinstance(action[1], float)
            now += action[1]
            timer = machine.get_timer()
            step = machine.handle_timer(now) if timer is not None and timer <= now else Step()
        elif action[0] == "bytes":
            assert isinstance(action[1], bytes)
            step = machine.receive_datagram(action[1], SERVER_ID, now)
            assert all(isinstance(e, AuthenticationFailure) for e in step.events)
        else:
            replay += 1 << 20
            payload, authentic = build(machine, action, replay)
            step = machine.receive_datagram(payload, SERVER_ID, now)
            if not authentic:
                assert all(isinstance(e, AuthenticationFailure) for e in step.events), step.events
        for transmit in step.send:
            assert transmit.port == 67
            assert transmit.broadcast == (transmit.destination == IPv4Address("255.255.255.255"))
        check_invariants(machine, store, before)
        event(f"reached {machine.state.name}")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(timers, messages), max_size=30), st.integers(0, 2**32 - 1))
def test_without_a_key_only_the_lease_exchange_is_open_and_forcerenew_stays_shut(
    sequence: list[tuple[object, ...]], seed: int
) -> None:
    """No key, no nonce yet: OFFER/ACK/NAK are plain RFC 2131, but no FORCERENEW is ever acted on."""
    store = MemoryStateStore()
    machine = ClientMachine(client_config(1, keyed=False), store, random.Random(seed))
    now = T0
    machine.start(now)
    replay = 1 << 62
    for action in sequence:
        before = machine.state
        if action[0] == "timer":
            assert isinstance(action[1], float)
            now += action[1]
            timer = machine.get_timer()
            if timer is not None and timer <= now:
                machine.handle_timer(now)
        else:
            replay += 1 << 20
            payload, _ = build(machine, action, replay)
            machine.receive_datagram(payload, SERVER_ID, now)
        check_invariants(machine, store, before)
        event(f"reached {machine.state.name}")
        assert machine.counters["accepted:forcerenew"] == 0
