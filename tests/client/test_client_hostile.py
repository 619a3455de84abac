"""A hostile or broken server: replayed, forged, unauthenticated and oversized replies are
refused, counted, and leave the client's state exactly as it was."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from client_helpers import SERVER_ID, Lan, Node, client_config, forge, key, mac, provision, resign, server

from dhcp_client.events import AuthenticationFailure, ClientEvent, VpnPeersChanged
from dhcp_client.machine import State
from dhcp_client.persistence import ClientState
from dhcp_server.actions import Reply
from dhcp_server.model import AuthPolicy
from options import MessageType, decode_message
from options.rfc3118 import Authentication
from options.rfc6704 import forcerenew_hmac
from options.vpn import PeerCeBlock, vpn_specs

PEER_CE, _ = vpn_specs()
ATTACKER = IPv4Address("10.77.0.66")
#: Above any NTP-format replay value the server issues (its clock is in 2027).
FUTURE = (1 << 64) - 1


@dataclass
class Frozen:
    """What must not change when a message is refused."""

    state: State
    informing: bool
    snapshot: ClientState
    xid: int

    @classmethod
    def of(cls, node: Node) -> Frozen:
        m = node.machine
        return cls(m.state, m.informing, m.snapshot(), m.xid)


def assert_refused(
    node: Node, before: Frozen, counter: str, events: tuple[ClientEvent, ...], count: int = 1
) -> None:
    assert Frozen.of(node) == before
    assert node.machine.counters[f"dropped:{counter}"] == count, dict(node.machine.counters)
    assert all(isinstance(e, AuthenticationFailure) for e in events)


@pytest.fixture
def bound() -> tuple[Lan, Node, Node]:
    """ce1 and ce2 in VPN 7 on our server, both bound and informed."""
    engine = server()
    provision(engine, {1: frozenset({7}), 2: frozenset({7})})
    lan = Lan(engine)
    ce1, ce2 = lan.add(client_config(1)), lan.add(client_config(2), seed=2)
    for node in (ce2, ce1):
        lan.start(node)
        lan.advance(3)
    assert ce1.state() is State.BOUND
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}
    return lan, ce1, ce2


def renewing(lan: Lan, node: Node) -> None:
    """Server silent, clock to T1: the client waits in RENEWING for an ACK to its xid."""
    lan.server_up = False
    lease = node.machine.lease
    assert lease is not None
    lan.run(lease.t1_at + 1)
    assert node.state() is State.RENEWING


def ack_for(node: Node, auth: Authentication | None, sign_key: bytes | None) -> bytes:
    lease = node.machine.lease
    assert lease is not None
    return forge(
        MessageType.DHCPACK,
        xid=node.machine.xid,
        chaddr=mac(1),
        yiaddr=lease.address,
        ciaddr=lease.address,
        auth=auth,
        sign_key=sign_key,
    )


def test_a_replayed_ack_is_refused(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, _ = bound
    renewing(lan, ce1)
    floor = ce1.machine.snapshot().server_replay
    assert floor is not None
    before = Frozen.of(ce1)
    for replay in (floor, floor - 1):  # equal is a replay too (dhcpcd 9.4.1 only refuses equal)
        step = lan.feed(ce1, ack_for(ce1, Authentication.delayed(replay, 0x1001), key(1)))
        assert step.events == (AuthenticationFailure("replay", "DHCPACK", SERVER_ID),)
    assert Frozen.of(ce1) == before
    assert ce1.machine.counters["dropped:replay"] == 2
    # The very bytes of an earlier ACK, re-sent: a different transaction, dropped before any MAC work.
    old_ack = next(
        p
        for p in ce1.received
        if decode_message(p).message_type is MessageType.DHCPACK and decode_message(p).chaddr[:6] == mac(1)
    )
    lan.feed(ce1, old_ack)
    assert ce1.machine.counters["dropped:wrong_xid"] >= 1
    assert Frozen.of(ce1) == before


def test_an_ack_with_a_wrong_mac_or_none_is_refused_never_accepted_unauthenticated(
    bound: tuple[Lan, Node, Node],
) -> None:
    lan, ce1, _ = bound
    renewing(lan, ce1)
    before = Frozen.of(ce1)
    step = lan.feed(ce1, ack_for(ce1, Authentication.delayed(FUTURE, 0x1001), b"not-the-key"))
    assert_refused(ce1, before, "auth_failed", step.events)
    step = lan.feed(ce1, ack_for(ce1, None, None))
    assert_refused(ce1, before, "auth_missing", step.events)
    header_only = ack_for(ce1, Authentication.delayed(FUTURE), None)
    step = lan.feed(ce1, header_only)
    assert_refused(ce1, before, "auth_failed", step.events, count=2)
    other_secret = ack_for(ce1, Authentication.delayed(FUTURE, 0x1002), key(2))
    lan.feed(ce1, other_secret)
    assert ce1.machine.counters["dropped:auth_failed"] == 3
    assert Frozen.of(ce1) == before
    # The forged replays above did not raise the floor: the real server is still accepted.
    lan.server_up = True
    lan.advance(400)
    assert ce1.state() is State.BOUND


def test_an_unauthenticated_forcerenew_is_dropped_and_counted(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, _ = bound
    before = Frozen.of(ce1)
    lease = ce1.machine.lease
    assert lease is not None
    bare = forge(MessageType.DHCPFORCERENEW, xid=ce1.machine.xid, chaddr=mac(1), ciaddr=lease.address)
    step = lan.feed(ce1, bare, ATTACKER)
    assert_refused(ce1, before, "auth_missing", step.events)
    assert step.send == ()
    forged = forge(
        MessageType.DHCPFORCERENEW,
        xid=ce1.machine.xid,
        chaddr=mac(1),
        auth=Authentication.delayed(FUTURE, 0x1001),
        sign_key=b"guessed",
    )
    step = lan.feed(ce1, forged, ATTACKER)
    assert_refused(ce1, before, "auth_failed", step.events)


def test_a_forcerenew_with_a_wrong_xid_is_dropped_even_when_signed(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, _ = bound
    before = Frozen.of(ce1)
    for xid in (ce1.machine.xid ^ 1, 0):
        signed = forge(
            MessageType.DHCPFORCERENEW,
            xid=xid,
            chaddr=mac(1),
            auth=Authentication.delayed(FUTURE, 0x1001),
            sign_key=key(1),
        )
        step = lan.feed(ce1, signed)
        assert step.send == ()
    assert Frozen.of(ce1) == before
    assert ce1.machine.counters["dropped:wrong_xid"] == 2
    # Someone else's chaddr: not for us.
    signed = forge(
        MessageType.DHCPFORCERENEW,
        xid=ce1.machine.xid,
        chaddr=mac(9),
        auth=Authentication.delayed(FUTURE, 0x1001),
        sign_key=key(1),
    )
    lan.feed(ce1, signed)
    assert ce1.machine.counters["dropped:not_for_us"] >= 1
    assert Frozen.of(ce1) == before


def test_a_replayed_forcerenew_is_dropped(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, _ = bound
    captured: list[bytes] = []

    def keep(reply: Reply) -> list[Reply]:
        if decode_message(reply.payload).message_type is MessageType.DHCPFORCERENEW:
            captured.append(reply.payload)
        return [reply]

    lan.tap = keep
    lan.server.forcerenew_ce("ce1", lan.now)
    lan.advance(3)
    assert len(captured) == 1
    assert ce1.state() is State.BOUND  # renewed and re-informed
    before = Frozen.of(ce1)
    # The same FORCERENEW, its xid moved to the client's current one and re-signed by someone
    # with the key: the replay value is old, so it is refused.
    step = lan.feed(ce1, resign(captured[0], key(1), xid=ce1.machine.xid))
    assert_refused(ce1, before, "replay", step.events)
    # Byte for byte: the xid is stale.
    lan.feed(ce1, captured[0])
    assert ce1.machine.counters["dropped:wrong_xid"] == 1
    assert Frozen.of(ce1) == before


def informing(lan: Lan, node: Node) -> int:
    """Make the client send an INFORM whose reply never comes: returns its xid."""
    # A renewal whose ACK arrives but whose INFORM reply is swallowed.
    lan.tap = lambda r: [] if r.destination == node.ip and _is_inform_reply(lan, r.payload) else [r]
    lan.server.forcerenew_ce("ce1", lan.now)
    lan.advance(0.5)
    assert node.state() is State.BOUND
    assert node.machine.informing
    last = lan.to_server[-1][1]
    assert last.message_type is MessageType.DHCPINFORM
    return last.xid


def _is_inform_reply(lan: Lan, payload: bytes) -> bool:
    msg = decode_message(payload)
    informs = [m.xid for _, m in lan.to_server if m.message_type is MessageType.DHCPINFORM]
    return msg.message_type is MessageType.DHCPACK and msg.xid in informs


def inform_reply(xid: int, peer_ce: bytes, replay: int, sign_key: bytes = key(1)) -> bytes:
    return forge(
        MessageType.DHCPACK,
        xid=xid,
        chaddr=mac(1),
        extra=[(224, peer_ce)],
        auth=Authentication.delayed(replay, 0x1001),
        sign_key=sign_key,
        lease_time=None,
    )


@pytest.mark.parametrize(
    ("peer_ce", "counter"),
    [
        (b"\x00\x00\x00\x07\x01\x05" + bytes(8), "malformed_inform_ack"),  # count 5, two addresses
        (b"\x00\x00\x00\x07", "malformed_inform_ack"),  # a block header cut short
        (
            b"".join(
                PEER_CE.encode(
                    (PeerCeBlock(7, True, tuple(IPv4Address(f"10.{i}.{j}.1") for j in range(255))),)
                )
                for i in range(20)
            ),
            "peer_list_too_long",
        ),
        (
            PEER_CE.encode(tuple(PeerCeBlock(v, True) for v in range(65))),
            "too_many_vpns",
        ),
    ],
    ids=["count_past_end", "truncated_header", "5100_peers", "65_vpns"],
)
def test_a_malformed_or_absurd_peer_ce_list_is_refused(
    bound: tuple[Lan, Node, Node], peer_ce: bytes, counter: str
) -> None:
    lan, ce1, _ = bound
    xid = informing(lan, ce1)
    before = Frozen.of(ce1)
    step = lan.feed(ce1, inform_reply(xid, peer_ce, FUTURE))
    assert_refused(ce1, before, counter, step.events)
    assert step.events == ()
    # A well-formed, authenticated reply is still accepted afterwards.
    good = PEER_CE.encode((PeerCeBlock(7, False), PeerCeBlock(7, True, (IPv4Address("10.9.9.9"),))))
    lan.feed(ce1, inform_reply(xid, good, FUTURE))
    assert ce1.machine.peers == {7: frozenset({IPv4Address("10.9.9.9")})}


def test_an_inform_reply_with_a_bad_mac_or_replay_changes_no_peer(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, ce2 = bound
    xid = informing(lan, ce1)
    before = Frozen.of(ce1)
    wipe = PEER_CE.encode((PeerCeBlock(7, False),))
    step = lan.feed(ce1, inform_reply(xid, wipe, FUTURE, sign_key=b"wrong"))
    assert_refused(ce1, before, "auth_failed", step.events)
    floor = ce1.machine.snapshot().server_replay
    assert floor is not None
    step = lan.feed(ce1, inform_reply(xid, wipe, floor))
    assert_refused(ce1, before, "replay", step.events)
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}


def test_the_ce_own_address_is_never_its_own_peer(bound: tuple[Lan, Node, Node]) -> None:
    lan, ce1, ce2 = bound
    xid = informing(lan, ce1)
    listed = PEER_CE.encode((PeerCeBlock(7, False), PeerCeBlock(7, True, (ce1.ip, ce2.ip))))
    step = lan.feed(ce1, inform_reply(xid, listed, FUTURE))
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}
    assert not [e for e in step.events if isinstance(e, VpnPeersChanged)]  # nothing changed


def test_rfc6704_forcerenew_needs_the_nonce_hmac() -> None:
    engine = server(AuthPolicy.OFF)
    provision(engine, {1: frozenset({7})}, keyed=False, vpn_auth=AuthPolicy.OFF)
    lan = Lan(engine)
    ce1 = lan.add(client_config(1, keyed=False))
    lan.start(ce1)
    lan.advance(3)
    assert ce1.state() is State.BOUND
    before = Frozen.of(ce1)
    xid = ce1.machine.xid
    bare = forge(MessageType.DHCPFORCERENEW, xid=xid, chaddr=mac(1))
    step = lan.feed(ce1, bare, ATTACKER)
    assert_refused(ce1, before, "forcerenew_unauthenticated", step.events)
    wrong = forge(
        MessageType.DHCPFORCERENEW, xid=xid, chaddr=mac(1), auth=forcerenew_hmac(FUTURE), sign_key=bytes(16)
    )
    step = lan.feed(ce1, wrong, ATTACKER)
    assert_refused(ce1, before, "auth_failed", step.events)
    delayed = forge(
        MessageType.DHCPFORCERENEW,
        xid=xid,
        chaddr=mac(1),
        auth=Authentication.delayed(FUTURE, 0x1001),
        sign_key=key(1),
    )
    lan.feed(ce1, delayed, ATTACKER)
    assert ce1.machine.counters["dropped:forcerenew_unauthenticated"] == 2
    assert Frozen.of(ce1) == before
    # The right nonce works.
    nonce = ce1.machine.snapshot().nonce
    assert nonce is not None
    good = forge(
        MessageType.DHCPFORCERENEW, xid=xid, chaddr=mac(1), auth=forcerenew_hmac(FUTURE), sign_key=nonce
    )
    lan.feed(ce1, good)
    assert ce1.machine.counters["accepted:forcerenew"] == 1
