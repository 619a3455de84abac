"""The sans-IO server engine on a fake clock: RFC 2131 exchanges, RFC 3118 delayed
authentication, INFORM with VPN data, FORCERENEW, quarantine and relays."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from engine_helpers import NETWORK, SERVER_ID, Client, Harness, config

from dhcp_server.actions import LeaseWrite, ReplayWrite
from dhcp_server.auth import Credentials
from dhcp_server.engine import ServerEngine
from dhcp_server.model import AuthPolicy, CeRecord, QuarantinePolicy, VpnRecord
from options import DhcpMessage, MessageType, Options, decode_message, encode_message, rfc3118
from options.rfc2132 import SUBNET_MASK
from options.rfc3046 import RELAY_AGENT_INFORMATION, RelayAgentInformation, RelaySubOption
from options.rfc3118 import AUTHENTICATION, Authentication, MacKey, StaticKeys, verify
from options.rfc6704 import nonce_of
from options.vpn import PEER_CE, VPN_SERVERS, apply_peer_blocks

KEYS = {0x1001: b"ce1-secret-key-0001", 0x1002: b"ce2-secret-key-0002", 0x1003: b"ce3-secret-key-0003"}


def ce_client(n: int) -> Client:
    return Client(mac=bytes.fromhex(f"02000000000{n}"), secret_id=0x1000 + n, key=KEYS[0x1000 + n])


def provisioned(engine: ServerEngine, clients: list[Client], vpn_id: int = 7) -> None:
    engine.put_vpn(VpnRecord(vpn_id, "acme", vpn_servers=(IPv4Address("192.0.2.10"),)), 0)
    for i, c in enumerate(clients, start=1):
        assert c.secret_id is not None
        engine.put_ce(CeRecord(f"ce{i}", c.key_id, c.secret_id, frozenset({vpn_id})), c.key, 0)


def test_plain_exchange_hands_out_distinct_addresses_in_the_pool() -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OFF)))
    a, b = Client(mac=bytes.fromhex("0200000000aa")), Client(mac=bytes.fromhex("0200000000bb"))
    ack_a, ack_b = h.bind(a), h.bind(b)
    assert ack_a.yiaddr != ack_b.yiaddr
    for ack in (ack_a, ack_b):
        assert IPv4Address("10.77.0.50") <= ack.yiaddr <= IPv4Address("10.77.0.99")
        assert ack.options.get_value(rfc3118.AUTHENTICATION) is None
    leases = {lease.address for lease in h.engine.leases.leases()}
    assert leases == {ack_a.yiaddr, ack_b.yiaddr}


def test_an_ack_waits_for_its_lease_to_be_committed() -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OFF)))
    c = Client(mac=bytes.fromhex("0200000000aa"))
    offer_out = h.send(c.message(MessageType.DHCPDISCOVER))
    assert not offer_out.writes
    assert not offer_out.replies[0].durable  # an OFFER is no promise
    offer = h.only_reply(offer_out)[1]
    ack_out = h.send(
        c.message(MessageType.DHCPREQUEST, requested=offer.yiaddr, server_id=SERVER_ID, new_xid=False)
    )
    assert [type(w) for w in ack_out.writes] == [LeaseWrite]
    assert all(r.durable for r in ack_out.replies)


def test_delayed_authentication_signs_offer_and_ack_with_the_ce_key() -> None:
    h = Harness(ServerEngine(config()))
    ce1 = ce_client(1)
    provisioned(h.engine, [ce1])
    _, offer = h.only_reply(h.send(ce1.message(MessageType.DHCPDISCOVER, with_mac=False)))
    auth = offer.options.value(AUTHENTICATION)
    assert auth.secret_id == 0x1001
    assert verify(offer.wire, StaticKeys(KEYS)).valid
    assert not verify(offer.wire, StaticKeys({0x1001: b"wrong"})).valid
    request = ce1.message(MessageType.DHCPREQUEST, requested=offer.yiaddr, server_id=SERVER_ID, new_xid=False)
    out = h.send(request)
    _, ack = h.only_reply(out)
    assert ack.message_type is MessageType.DHCPACK
    assert verify(ack.wire, StaticKeys(KEYS)).valid
    assert ack.options.value(AUTHENTICATION).replay_detection > auth.replay_detection
    assert ReplayWrite(ce1.key_id, ce1.replay) in out.writes


@pytest.mark.parametrize("tamper", ["wrong_key", "replay", "no_mac", "unknown_client"])
def test_failed_authentication_is_dropped_counted_and_changes_nothing(tamper: str) -> None:
    h = Harness(ServerEngine(config()))
    ce1 = ce_client(1)
    provisioned(h.engine, [ce1])
    ack = h.bind(ce1)
    before = h.engine.leases.leases()
    renew: bytes
    if tamper == "wrong_key":
        ce1.key = b"not-the-key"
        renew = ce1.message(MessageType.DHCPREQUEST, ciaddr=ack.yiaddr)
        counter = "dropped:auth_failed"
    elif tamper == "replay":
        renew = ce1.sent[-1]  # the REQUEST again, byte for byte
        counter = "dropped:replay"
    elif tamper == "no_mac":
        renew = ce1.message(MessageType.DHCPREQUEST, ciaddr=ack.yiaddr, with_mac=False)
        counter = "dropped:auth_missing"
    else:
        stranger = Client(mac=bytes.fromhex("0200000000ee"), secret_id=0x9999, key=b"k")
        renew = stranger.message(MessageType.DHCPDISCOVER, with_mac=False)
        counter = "dropped:auth_unknown_client"
    h.now += 100
    out = h.send(renew, source=ack.yiaddr)
    assert out.replies == [] and out.writes == []
    assert h.engine.counters[counter] == 1
    assert h.engine.leases.leases() == before


def test_inform_returns_the_vpn_peers_and_servers_only_when_authenticated() -> None:
    h = Harness(ServerEngine(config()))
    clients = [ce_client(1), ce_client(2), ce_client(3)]
    provisioned(h.engine, clients)
    acks = [h.bind(c) for c in clients]
    ce1 = clients[0]
    reply, inform_ack = h.only_reply(h.send(ce1.message(MessageType.DHCPINFORM, ciaddr=acks[0].yiaddr)))
    assert reply.destination == acks[0].yiaddr and reply.port == 68
    assert inform_ack.yiaddr == IPv4Address(0)
    assert inform_ack.options.get(51) is None  # RFC 2131: no lease time in an INFORM reply
    assert verify(inform_ack.wire, StaticKeys(KEYS)).valid
    blocks = inform_ack.options.value(PEER_CE)
    peers = apply_peer_blocks({}, blocks, complete=True)
    assert peers == {7: frozenset({acks[1].yiaddr, acks[2].yiaddr})}
    assert inform_ack.options.value(VPN_SERVERS) == (IPv4Address("192.0.2.10"),)
    # The same request without a MAC gets the subnet's parameters but no peer list.
    _, bare = h.only_reply(h.send(ce1.message(MessageType.DHCPINFORM, ciaddr=acks[0].yiaddr, with_mac=False)))
    assert bare.options.get(224) is None


def test_a_new_ce_triggers_authenticated_forcerenews_to_the_others_until_they_return() -> None:
    h = Harness(ServerEngine(config(forcerenew_first_retry=4.0, forcerenew_max_attempts=3)))
    ce1, ce2, ce3 = ce_client(1), ce_client(2), ce_client(3)
    provisioned(h.engine, [ce1, ce2])
    ack1, ack2 = h.bind(ce1), h.bind(ce2)
    for client, ack in ((ce1, ack1), (ce2, ack2)):  # as a CE does on binding
        h.send(client.message(MessageType.DHCPINFORM, ciaddr=ack.yiaddr), source=ack.yiaddr)
    assert h.engine.on_timer(h.now).replies == []  # both asked after every change so far
    # CE3 is added to the VPN and binds: CE1 and CE2 must be told.
    assert ce3.secret_id is not None
    h.engine.put_ce(CeRecord("ce3", ce3.key_id, ce3.secret_id, frozenset({7})), ce3.key, h.now)
    ack3 = h.bind(ce3)
    h.send(ce3.message(MessageType.DHCPINFORM, ciaddr=ack3.yiaddr), source=ack3.yiaddr)
    assert h.engine.on_timer(h.now + 0.5).replies == []  # changes are coalesced for a hold-down
    h.now += 1.0
    out = h.engine.on_timer(h.now)
    sent = {r.destination: m for r, m in h.replies(out)}
    assert set(sent) == {ack1.yiaddr, ack2.yiaddr}
    for address, (client, ack) in {ack1.yiaddr: (ce1, ack1), ack2.yiaddr: (ce2, ack2)}.items():
        fr = sent[address]
        assert fr.message_type is MessageType.DHCPFORCERENEW
        assert fr.xid == client.xid  # dhcpcd accepts only its current xid
        assert fr.chaddr[:6] == client.mac and fr.ciaddr == ack.yiaddr
        assert verify(fr.wire, StaticKeys(KEYS)).valid
    # CE1 comes back (renews); CE2 stays silent and is retried with backoff, then given up.
    h.send(ce1.message(MessageType.DHCPREQUEST, ciaddr=ack1.yiaddr), source=ack1.yiaddr)
    assert len(h.engine.forcerenews) == 1
    assert h.engine.on_timer(h.now + 3.9).replies == []
    retry = h.engine.on_timer(h.now + 4.0)
    assert [r.destination for r in retry.replies] == [ack2.yiaddr]
    assert [r.destination for r in h.engine.on_timer(h.now + 12.0).replies] == [ack2.yiaddr]
    h.engine.on_timer(h.now + 100.0)
    assert len(h.engine.forcerenews) == 0
    assert h.engine.counters["forcerenew:gave_up"] == 1


def test_removing_a_ce_forcerenews_the_remaining_members() -> None:
    h = Harness(ServerEngine(config()))
    clients = [ce_client(1), ce_client(2), ce_client(3)]
    provisioned(h.engine, clients)
    acks = [h.bind(c) for c in clients]
    for c, ack in zip(clients, acks, strict=True):
        h.send(c.message(MessageType.DHCPINFORM, ciaddr=ack.yiaddr), source=ack.yiaddr)
    assert h.engine.on_timer(h.now + 1.0).replies == []  # everyone asked after the joins
    h.now += 2.0
    h.engine.delete_ce("ce2", h.now)
    out = h.engine.on_timer(h.now + 1.0)
    assert {r.destination for r in out.replies} == {acks[0].yiaddr, acks[2].yiaddr}
    _, inform = h.only_reply(h.send(clients[0].message(MessageType.DHCPINFORM, ciaddr=acks[0].yiaddr)))
    blocks = inform.options.value(PEER_CE)
    assert apply_peer_blocks({}, blocks, complete=True) == {7: frozenset({acks[2].yiaddr})}


def test_rfc6704_nonce_is_delivered_and_protects_forcerenew() -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OPTIONAL), random_bytes=lambda n: bytes(range(n))))
    client = Client(mac=bytes.fromhex("0200000000cc"), nonce_capable=True)
    h.engine.put_vpn(VpnRecord(7, "acme"), 0)
    h.engine.put_ce(CeRecord("ce-nonce", client.key_id, None, frozenset({7})), None, 0)
    ack = h.bind(client)
    nonce = nonce_of(ack.options.value(AUTHENTICATION))
    assert nonce == bytes(range(16))
    _, offer = h.replies(h.send(client.message(MessageType.DHCPDISCOVER)))[0]
    assert offer.options.get(90) is None  # dhcpcd drops an OFFER that carries option 90 in this mode
    h.engine.forcerenew_ce("ce-nonce", h.now)
    _, fr = h.only_reply(h.engine.on_timer(h.now))
    assert verify(fr.wire, nonce=nonce).valid
    assert not verify(fr.wire, nonce=bytes(16)).valid


def test_a_ce_without_credentials_never_gets_an_unauthenticated_forcerenew() -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OFF)))
    client = Client(mac=bytes.fromhex("0200000000dd"))
    h.engine.put_vpn(VpnRecord(7, "acme"), 0)
    h.engine.put_ce(CeRecord("plain", client.key_id, None, frozenset({7})), None, 0)
    h.bind(client)
    h.engine.forcerenew_ce("plain", h.now)
    assert h.engine.on_timer(h.now).replies == []
    assert h.engine.counters["forcerenew:cannot_authenticate"] == 1


def test_a_flooding_client_is_quarantined_and_the_others_are_still_served() -> None:
    policy = QuarantinePolicy(max_messages=5, window=10.0, duration=60.0)
    h = Harness(ServerEngine(config(AuthPolicy.OFF, quarantine=policy)))
    flood = Client(mac=bytes.fromhex("0200000000ff"))
    answered = sum(bool(h.send(flood.message(MessageType.DHCPDISCOVER)).replies) for _ in range(50))
    assert answered == 5
    assert h.engine.counters["dropped:rate_limited"] == 45
    assert h.bind(Client(mac=bytes.fromhex("020000000011"))).message_type is MessageType.DHCPACK
    h.now += 61
    assert h.send(flood.message(MessageType.DHCPDISCOVER)).replies


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01" * 239, bytes(236) + b"\x63\x82\x53\x63" + b"\x35\x05\x01", bytes(300)],
)
def test_malformed_datagrams_are_counted_and_dropped(payload: bytes) -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OFF)))
    out = h.send(payload)
    assert out.replies == [] and out.writes == []
    assert h.engine.counters["dropped:malformed"] == 1


def test_relayed_request_is_answered_to_the_relay_with_option_82_and_a_valid_mac() -> None:
    h = Harness(ServerEngine(config()))
    ce1 = ce_client(1)
    provisioned(h.engine, [ce1])
    relay = IPv4Address("10.77.0.2")
    info = RelayAgentInformation((RelaySubOption(1, b"port-7"), RelaySubOption(2, b"olt-3")))
    plain = decode_message(ce1.message(MessageType.DHCPDISCOVER, with_mac=False))
    relayed = DhcpMessage(
        op=1, xid=plain.xid, hops=1, giaddr=relay, chaddr=plain.chaddr,
        options=Options([*plain.options.items(), RELAY_AGENT_INFORMATION.item(info)]),
    )  # fmt: skip
    reply, offer = h.only_reply(h.send(encode_message(relayed), source=relay))
    assert (reply.destination, reply.port) == (relay, 67)
    assert offer.options[82] == RELAY_AGENT_INFORMATION.encode(info)
    # The relay strips option 82; what reaches the client must verify.
    start = reply.payload.index(bytes((82, len(offer.options[82]))))
    stripped = reply.payload[:start] + reply.payload[start + 2 + len(offer.options[82]) :]
    assert verify(stripped, StaticKeys(KEYS)).valid


def test_reply_addressing_follows_rfc2131_section_4_1() -> None:
    h = Harness(ServerEngine(config(AuthPolicy.OFF)))
    c = Client(mac=bytes.fromhex("0200000000ab"))
    reply, offer = h.only_reply(h.send(c.message(MessageType.DHCPDISCOVER)))
    # No broadcast flag, no address yet: unicast to yiaddr at the client's hardware address.
    assert reply.destination == offer.yiaddr and reply.hardware == c.mac
    nak_reply, nak = h.only_reply(
        h.send(c.message(MessageType.DHCPREQUEST, requested=IPv4Address("192.0.2.1"), with_mac=False))
    )
    assert nak.message_type is MessageType.DHCPNAK
    assert nak_reply.destination == IPv4Address("255.255.255.255")
    assert offer.options.value(SUBNET_MASK) == NETWORK.netmask


def test_a_nak_to_an_authenticated_client_is_signed() -> None:
    # dhcpcd (and our client) drop unsigned replies once they authenticate, so an
    # unsigned NAK would leave the client retrying instead of starting over.
    h = Harness(ServerEngine(config()))
    ce1 = ce_client(1)
    provisioned(h.engine, [ce1])
    h.bind(ce1)
    reboot = ce1.message(MessageType.DHCPREQUEST, requested=IPv4Address("10.77.0.98"))
    _, nak = h.only_reply(h.send(reboot))
    assert nak.message_type is MessageType.DHCPNAK
    assert verify(nak.wire, StaticKeys(KEYS)).valid


@pytest.mark.parametrize(("protocol", "realm"), [(1, b""), (2, b"rdc.example"), (2, b"")])
def test_reply_authentication_payload_equals_the_encoded_option(protocol: int, realm: bytes) -> None:
    credentials = Credentials(protocol, realm, 0x1234, MacKey(b"k" * 16))
    expected = Authentication(protocol, 1, 0, 77, realm + (0x1234).to_bytes(4, "big") + bytes(16))
    assert credentials.payload(77) == AUTHENTICATION.encode(expected)
