"""Our client against our server engine, in memory on a fake clock: delayed authentication,
INFORM with peers, FORCERENEW after a VPN change, RFC 6704, reboot, rebinding and expiry."""

from __future__ import annotations

from ipaddress import IPv4Address

from client_helpers import SERVER_ID, T0, VPN_SERVER, Lan, client_config, key, mac, provision, server

from dhcp_client.events import (
    AuthenticationFailure,
    LeaseBound,
    LeaseLost,
    LeaseRenewed,
    VpnPeersChanged,
    VpnServersChanged,
)
from dhcp_client.machine import State
from dhcp_client.persistence import MemoryStateStore
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey
from options import MessageType, decode_message
from options.rfc2132 import REQUESTED_IP_ADDRESS
from options.rfc3118 import AUTHENTICATION, AuthProtocol
from options.rfc6704 import FORCERENEW_NONCE_CAPABLE


def test_delayed_authentication_bind_then_inform_brings_peers_and_servers() -> None:
    engine = server()
    provision(engine, {1: frozenset({7}), 2: frozenset({7})})
    lan = Lan(engine)
    ce1, ce2 = lan.add(client_config(1)), lan.add(client_config(2), seed=2)
    lan.start(ce2)
    lan.run(T0 + 1)
    assert ce2.state() is State.BOUND
    lan.start(ce1)
    lan.run(T0 + 2)

    assert ce1.state() is State.BOUND
    bound = ce1.of_type(LeaseBound)
    assert len(bound) == 1
    assert isinstance(bound[0], LeaseBound)
    lease = bound[0].lease
    assert lease.server_id == SERVER_ID
    assert (lease.lease_time, lease.renewal_time, lease.rebinding_time) == (600, 300, 525)
    # The DISCOVER asked for authentication (header only); everything after carried a MAC.
    sent = [m for r, m in lan.to_server if m.hardware_address == ce1.machine.config.hardware_address]
    kinds = [m.message_type for m in sent]
    assert kinds[:3] == [MessageType.DHCPDISCOVER, MessageType.DHCPREQUEST, MessageType.DHCPINFORM]
    discover_auth = sent[0].options.value(AUTHENTICATION)
    assert (discover_auth.protocol, discover_auth.algorithm, discover_auth.rdm) == (1, 1, 0)
    assert discover_auth.information == b""
    for m in sent[1:]:
        assert m.options.value(AUTHENTICATION).secret_id == 0x1001
    replays = [m.options.value(AUTHENTICATION).replay_detection for m in sent]
    assert replays == sorted(set(replays))
    assert FORCERENEW_NONCE_CAPABLE.code not in sent[0].options  # only without a key
    inform = sent[2]
    assert inform.ciaddr == lease.address
    # The INFORM reply: ce2 is ce1's peer in VPN 7, and the VPN server is known.
    peers = ce1.of_type(VpnPeersChanged)
    assert peers == [VpnPeersChanged(7, frozenset({ce2.ip}), frozenset(), frozenset({ce2.ip}))]
    assert ce1.of_type(VpnServersChanged) == [VpnServersChanged((VPN_SERVER,))]
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}
    assert not ce1.of_type(AuthenticationFailure)
    # The lease and the replay floor were saved.
    saved = ce1.store.state
    assert saved is not None
    assert saved.lease == lease
    assert saved.server_replay is not None
    assert saved.peers == {7: frozenset({ce2.ip})}


def test_a_vpn_change_forcerenews_then_the_client_renews_and_reinforms() -> None:
    engine = server()
    provision(engine, {1: frozenset({7}), 2: frozenset({7}), 3: frozenset({8})})
    lan = Lan(engine)
    ce1, ce2, ce3 = (lan.add(client_config(n), seed=n) for n in (1, 2, 3))
    for node in (ce1, ce2, ce3):
        lan.start(node)
        lan.advance(3)
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}
    assert ce3.machine.peers == {8: frozenset()}
    xid_before = ce1.machine.xid
    forcerenews_before = ce1.machine.counters["accepted:forcerenew"]
    ce1.events.clear()
    ce2.events.clear()

    # The operator moves ce3 into VPN 7 (and out of 8): every member of 7 and 8 is told.
    engine.put_ce(
        CeRecord("ce3", ClientKey.from_hardware(1, mac(3)), 0x1003, frozenset({7})), key(3), lan.now
    )
    lan.advance(3)

    assert ce1.machine.counters["accepted:forcerenew"] == forcerenews_before + 1
    assert ce1.state() is State.BOUND
    renewed = ce1.of_type(LeaseRenewed)
    assert len(renewed) == 1
    assert ce1.machine.xid != xid_before  # a new transaction for the renewal
    # The renewal REQUEST after the FORCERENEW went unicast to the server, with ciaddr set.
    renew = next(t for t in ce1.sent[::-1] if t.destination == SERVER_ID and not t.broadcast)
    assert renew.destination == SERVER_ID
    changed = ce1.of_type(VpnPeersChanged)
    assert changed == [VpnPeersChanged(7, frozenset({ce3.ip}), frozenset(), frozenset({ce2.ip, ce3.ip}))]
    # ce3 left VPN 8 and joined 7.
    changes3 = {e.vpn_id: e for e in ce3.of_type(VpnPeersChanged) if isinstance(e, VpnPeersChanged)}
    assert changes3[7].peers == frozenset({ce1.ip, ce2.ip})
    assert changes3[8].member is False
    assert ce3.machine.peers == {7: frozenset({ce1.ip, ce2.ip})}

    # ce2 is removed from VPN 7: ce1 and ce3 see it go.
    ce1.events.clear()
    engine.put_ce(CeRecord("ce2", ClientKey.from_hardware(1, mac(2)), 0x1002, frozenset()), None, lan.now)
    lan.advance(3)
    assert ce1.of_type(VpnPeersChanged) == [
        VpnPeersChanged(7, frozenset(), frozenset({ce2.ip}), frozenset({ce3.ip}))
    ]


def test_rfc6704_nonce_protects_forcerenew_without_a_key() -> None:
    engine = server(AuthPolicy.OFF)
    provision(engine, {1: frozenset({7}), 2: frozenset({7})}, keyed=False, vpn_auth=AuthPolicy.OFF)
    lan = Lan(engine)
    ce1 = lan.add(client_config(1, keyed=False))
    ce2 = lan.add(client_config(2, keyed=False), seed=2)
    lan.start(ce1)
    lan.advance(3)
    assert ce1.state() is State.BOUND
    sent = [m for _, m in lan.to_server]
    for m in sent:
        assert m.options.value(FORCERENEW_NONCE_CAPABLE) == (1,)
        assert AUTHENTICATION.code not in m.options
    assert ce1.store.state is not None
    assert ce1.store.state.nonce is not None
    # ce2 binds: the server FORCERENEWs ce1, signed with ce1's nonce (protocol 3 type 2).
    lan.start(ce2)
    lan.advance(3)
    assert ce1.machine.counters["accepted:forcerenew"] == 1
    assert ce1.machine.peers == {7: frozenset({ce2.ip})}
    forcerenew = next(
        m for m in (decode_message(p) for p in ce1.received) if m.message_type is MessageType.DHCPFORCERENEW
    )
    auth = forcerenew.options.value(AUTHENTICATION)
    assert auth.protocol == AuthProtocol.RECONFIGURE_KEY
    assert auth.information[0] == 2


def test_reboot_with_a_remembered_lease_uses_init_reboot() -> None:
    engine = server()
    provision(engine, {1: frozenset({7})})
    lan = Lan(engine)
    store = MemoryStateStore()
    ce1 = lan.add(client_config(1), store)
    lan.start(ce1)
    lan.advance(3)
    address = ce1.address
    replay_floor = store.state.server_replay if store.state else None
    lan.nodes.clear()  # the CE restarts: a new machine on the same state
    lan.to_server.clear()
    lan.advance(100)
    again = lan.add(client_config(1), store, seed=9)
    assert again.machine.peers == {7: frozenset()}
    lan.start(again)
    assert again.state() is State.INIT_REBOOT
    lan.advance(3)
    assert again.state() is State.BOUND
    assert again.address == address
    first = lan.to_server[0][1]
    assert first.message_type is MessageType.DHCPREQUEST
    assert first.options.get_value(REQUESTED_IP_ADDRESS) == address
    assert first.options.get(54) is None  # "'server identifier' MUST NOT be filled in"
    assert first.ciaddr == IPv4Address(0)
    assert again.of_type(LeaseBound)
    assert store.state is not None
    assert replay_floor is not None
    assert store.state.server_replay is not None
    assert store.state.server_replay > replay_floor


def test_server_gone_renewing_then_rebinding_then_expiry_loses_the_lease() -> None:
    engine = server()
    provision(engine, {1: frozenset({7})})
    lan = Lan(engine)
    ce1 = lan.add(client_config(1))
    lan.start(ce1)
    lan.advance(3)
    lease = ce1.machine.lease
    assert lease is not None
    # An ordinary renewal at T1 while the server is up.
    lan.run(lease.t1_at + 1)
    assert ce1.state() is State.BOUND
    assert len(ce1.of_type(LeaseRenewed)) == 1
    lease = ce1.machine.lease
    assert lease is not None
    lan.server_up = False
    lan.run(lease.t1_at + 1)
    assert ce1.state() is State.RENEWING
    lan.run(lease.t2_at + 1)
    assert ce1.state() is State.REBINDING
    assert ce1.sent[-1].broadcast
    rebind_sends = len(ce1.sent)
    lan.run(lease.expires_at - 1)
    assert ce1.state() is State.REBINDING
    assert len(ce1.sent) > rebind_sends  # retransmitted in REBINDING
    lan.run(lease.expires_at + 0.5)
    assert ce1.of_type(LeaseLost) == [LeaseLost(lease.address, "expired")]
    assert ce1.machine.lease is None
    assert ce1.state() in (State.INIT, State.SELECTING)
    # The server comes back: a fresh lease.
    lan.server_up = True
    lan.advance(70)
    assert ce1.state() is State.BOUND
    assert len(ce1.of_type(LeaseBound)) == 2


def test_release_and_decline() -> None:
    engine = server()
    provision(engine, {1: frozenset({7})})
    lan = Lan(engine)
    ce1 = lan.add(client_config(1))
    lan.start(ce1)
    lan.advance(3)
    first = ce1.address
    assert first is not None
    lan._process(ce1, ce1.machine.address_conflict(lan.now))
    assert ce1.of_type(LeaseLost) == [LeaseLost(first, "declined")]
    decline = lan.to_server[-1][1]
    assert decline.message_type is MessageType.DHCPDECLINE
    assert engine.counters["received:DHCPDECLINE"] == 1
    assert ce1.state() is State.INIT
    timer = ce1.machine.get_timer()
    assert timer is not None
    assert timer >= lan.now + 10  # RFC 2131 3.1: at least ten seconds
    lan.advance(12)
    assert ce1.state() is State.BOUND
    assert ce1.address != first  # the declined address is held back by the server
    second = ce1.address
    assert second is not None
    lan._process(ce1, ce1.machine.release(lan.now))
    assert ce1.state() is State.STOPPED
    assert ce1.of_type(LeaseLost)[-1] == LeaseLost(second, "released")
    assert lan.to_server[-1][1].message_type is MessageType.DHCPRELEASE
    assert engine.leases.active_lease_of(ClientKey.from_hardware(1, mac(1)), lan.now) is None
