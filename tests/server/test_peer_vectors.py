"""Captures of real peers talking to our server (tests/vectors/server-peers/), decoded again.

Each capture was recorded once by the interop tests (CEA_CAPTURE_DIR, see the README
next to them). The test proves the codec reads every datagram of each one, that the
exchanges have the shape the peers demanded, and that every MAC verifies: RFC 3118 with
the test key, RFC 6704 with the nonce our DHCPACK delivered just before.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from options import DhcpMessage, MessageType, decode_message
from options.pcap import read_capture
from options.rfc3118 import AUTHENTICATION, StaticKeys, verify
from options.rfc6704 import nonce_of
from options.vpn import registry_with_vpn_codes

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "server-peers"
SERVER = IPv4Address("10.77.0.1")
KEYS = StaticKeys({0x1234: b"the-key"})
REGISTRY = registry_with_vpn_codes(224, 225)
T = MessageType


def exchange(name: str) -> list[tuple[IPv4Address, bytes, DhcpMessage]]:
    path = VECTORS / f"{name}.pcap"
    with path.open("rb") as stream:
        found = [(d.src, d.payload, decode_message(d.payload, REGISTRY)) for d in read_capture(stream)]
    assert found, f"{path} holds no DHCP datagram"
    return found


def types(messages: list[tuple[IPv4Address, bytes, DhcpMessage]]) -> list[MessageType | None]:
    return [msg.message_type for _, _, msg in messages]


def test_udhcpc_bind_renew_release() -> None:
    messages = exchange("udhcpc-bind-renew-release")
    assert types(messages) == [
        T.DHCPDISCOVER, T.DHCPOFFER, T.DHCPREQUEST, T.DHCPACK, T.DHCPREQUEST, T.DHCPACK, T.DHCPRELEASE,
    ]  # fmt: skip
    renew = messages[4][2]
    assert renew.ciaddr == messages[3][2].yiaddr != IPv4Address(0)
    assert all(msg.options.get_value(AUTHENTICATION) is None for _, _, msg in messages)


def test_dhcpcd_delayed_auth_every_mac_verifies() -> None:
    messages = exchange("dhcpcd-9.4.1-delayed-bind-forcerenew")
    kinds = types(messages)
    assert kinds[:4] == [T.DHCPDISCOVER, T.DHCPOFFER, T.DHCPREQUEST, T.DHCPACK]
    forcerenew = kinds.index(T.DHCPFORCERENEW)
    assert kinds[forcerenew + 1 : forcerenew + 3] == [T.DHCPREQUEST, T.DHCPACK]
    for source, payload, msg in messages:
        auth = msg.options.get_value(AUTHENTICATION)
        assert auth is not None, f"{msg.message_type} without option 90"
        if msg.message_type is T.DHCPDISCOVER:
            assert not auth.has_mac  # "requests authentication", RFC 3118 5.3
            continue
        check = verify(payload, KEYS)
        assert check.valid, f"{msg.message_type} from {source}: {check.reason}"
    server_replays = [
        msg.options.value(AUTHENTICATION).replay_detection for src, _, msg in messages if src == SERVER
    ]
    assert server_replays == sorted(set(server_replays))  # strictly increasing


def test_dhcpcd_rfc6704_nonce() -> None:
    messages = exchange("dhcpcd-9.4.1-rfc6704-nonce-forcerenew")
    kinds = types(messages)
    assert kinds[:4] == [T.DHCPDISCOVER, T.DHCPOFFER, T.DHCPREQUEST, T.DHCPACK]
    assert messages[1][2].options.get_value(AUTHENTICATION) is None  # no option 90 in the OFFER
    nonce: bytes | None = None
    forcerenews = 0
    for _, payload, msg in messages:
        auth = msg.options.get_value(AUTHENTICATION)
        if msg.message_type is T.DHCPACK:
            assert auth is not None
            nonce = nonce_of(auth)
            assert nonce is not None and len(nonce) == 16
        elif msg.message_type is T.DHCPFORCERENEW:
            forcerenews += 1
            check = verify(payload, nonce=nonce)
            assert check.valid, check.reason
    assert forcerenews >= 1


def test_perfdhcp_relay_exchange() -> None:
    messages = exchange("perfdhcp-kea-2.2-relay")
    relay = IPv4Address("10.77.0.2")
    for source, _, msg in messages:
        assert msg.giaddr == relay
        if source == relay:
            assert msg.hops == 1
    first = [msg.message_type for _, _, msg in messages if msg.xid == messages[0][2].xid]
    assert first == [T.DHCPDISCOVER, T.DHCPOFFER, T.DHCPREQUEST, T.DHCPACK]  # perfdhcp reuses the xid
