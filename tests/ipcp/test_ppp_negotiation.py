"""CE and NAS sessions talking in memory on a fake clock: whole negotiations, lost frames, a NAS
without VPN-IP-Addresses, Max-Configure exhaustion, renegotiation, echo, termination."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcp.engine import ACK, REJECT, ControlProtocol, NegotiationConfig, Received, Verdict
from ipcp.events import (
    AddressLearned,
    DnsLearned,
    IpDatagram,
    LayerDown,
    LayerFinished,
    LayerUp,
    LinkDead,
    PeerConfigured,
    PppEvent,
    VpnOptionRejected,
    VpnPeersChanged,
    VpnPeersLearned,
)
from ipcp.frame import Frame, Protocol, decode_frame, encode_frame
from ipcp.fsm import State
from ipcp.hdlc import HdlcDeframer, encode_hdlc
from ipcp.lcp_options import LCP_OPTIONS
from ipcp.packet import (
    NCP_CODES,
    ConfigureAck,
    ConfigureNak,
    ConfigureRequest,
    ProtocolReject,
    decode_packet,
)
from ipcp.rfc1332 import IpAddress, IpAddresses, IpCompressionProtocol
from ipcp.rfc1877 import PrimaryDns
from ipcp.roles import CeIpcpPolicy, NasConfig, NasIpcpPolicy
from ipcp.session import PppSession
from ipcp.vpn_option import VpnIpAddresses

A = IPv4Address
NAS_ADDRESS, CE_ADDRESS = A("100.64.0.1"), A("100.64.0.2")
DNS1, DNS2 = A("192.0.2.53"), A("192.0.2.54")
PEERS: dict[int, list[IPv4Address]] = {7: [A("10.9.0.1"), A("10.9.0.2")], 12: [A("10.12.0.1")]}


def make_pair(
    vpn_peers: Callable[[IPv4Address], Mapping[int, Sequence[IPv4Address]]] | None = lambda _ce: PEERS,
    seed: int = 1,
    **session: object,
) -> tuple[PppSession, PppSession]:
    rng = random.Random(seed)
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32), **session)  # type: ignore[arg-type]
    nas_policy = NasIpcpPolicy(NasConfig(NAS_ADDRESS, CE_ADDRESS, DNS1, DNS2, vpn_peers=vpn_peers))
    nas = PppSession(nas_policy, random32=lambda: rng.getrandbits(32), **session)  # type: ignore[arg-type]
    return ce, nas


class Wire:
    """Carries frames both ways, dropping those ``drop(direction, index)`` picks; advances a fake clock."""

    def __init__(
        self, ce: PppSession, nas: PppSession, drop: Callable[[str, int], bool] = lambda _d, _i: False
    ) -> None:
        self.ce, self.nas, self.drop = ce, nas, drop
        self.now = 0.0
        self.sent = {"ce>nas": 0, "nas>ce": 0}
        self.dropped = 0
        self.ce_events: list[PppEvent] = []
        self.nas_events: list[PppEvent] = []

    def _carry(self, data: bytes, direction: str, to: PppSession) -> bool:
        frames = [p for p in data.split(b"\x7e") if p]
        for frame in frames:
            index = self.sent[direction]
            self.sent[direction] += 1
            if self.drop(direction, index):
                self.dropped += 1
            else:
                to.receive_data(b"\x7e" + frame + b"\x7e", self.now)
        return bool(frames)

    def run(self, until: float = 120.0) -> None:
        while True:
            moved = self._carry(self.ce.data_to_send(), "ce>nas", self.nas)
            moved |= self._carry(self.nas.data_to_send(), "nas>ce", self.ce)
            self.ce_events += self.ce.next_events()
            self.nas_events += self.nas.next_events()
            if moved:
                continue
            timers = [t for t in (self.ce.get_timer(), self.nas.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                return
            self.now = max(self.now, min(timers))
            self.ce.handle_timer(self.now)
            self.nas.handle_timer(self.now)


def opened(wire: Wire) -> Wire:
    wire.ce.start(0)
    wire.nas.start(0)
    wire.run()
    return wire


def of_type(events: list[PppEvent], kind: type[PppEvent]) -> list[PppEvent]:
    return [e for e in events if isinstance(e, kind)]


def expected_vpns() -> VpnPeersLearned:
    return VpnPeersLearned(tuple((k, frozenset(v)) for k, v in sorted(PEERS.items())))


def test_ce_learns_address_dns_and_vpn_peers() -> None:
    wire = opened(Wire(*make_pair()))
    ce, nas = wire.ce, wire.nas
    assert (ce.lcp.state, ce.ipcp.state, nas.lcp.state, nas.ipcp.state) == (State.OPENED,) * 4
    assert wire.now == 0.0  # nothing was lost, so no retransmission was needed
    events = wire.ce_events
    assert of_type(events, AddressLearned) == [AddressLearned(CE_ADDRESS, NAS_ADDRESS)]
    assert of_type(events, DnsLearned) == [DnsLearned(DNS1, DNS2)]
    assert of_type(events, VpnPeersChanged) == [
        VpnPeersChanged(7, frozenset(PEERS[7]), frozenset(), frozenset(PEERS[7])),
        VpnPeersChanged(12, frozenset(PEERS[12]), frozenset(), frozenset(PEERS[12])),
    ]
    assert of_type(events, VpnPeersLearned) == [expected_vpns()]
    assert of_type(wire.nas_events, PeerConfigured) == [PeerConfigured(CE_ADDRESS, expected_vpns().vpns)]
    # LCP settled ACCM 0 and header compression both ways
    assert ce.link.transmit_accm == 0
    assert ce.link.transmit_pfc
    assert ce.link.transmit_acfc


def test_ip_datagrams_flow_after_ipcp_opens() -> None:
    wire = opened(Wire(*make_pair()))
    assert wire.ce.send_datagram(b"\x45" + bytes(19))
    wire.run()
    assert of_type(wire.nas_events, IpDatagram) == [IpDatagram(b"\x45" + bytes(19))]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 11), max_size=5), st.sets(st.integers(0, 11), max_size=5), st.integers(0, 99))
def test_negotiation_survives_lost_frames(ce_drops: set[int], nas_drops: set[int], seed: int) -> None:
    def drop(direction: str, index: int) -> bool:
        return index in (ce_drops if direction == "ce>nas" else nas_drops)

    wire = opened(Wire(*make_pair(seed=seed), drop=drop))
    assert (wire.ce.ipcp.state, wire.nas.ipcp.state) == (State.OPENED, State.OPENED)
    assert wire.ce.ipcp.policy.address == CE_ADDRESS  # type: ignore[attr-defined]
    assert wire.ce.ipcp.policy.dns == (DNS1, DNS2)  # type: ignore[attr-defined]
    assert of_type(wire.ce_events, VpnPeersLearned)[-1] == expected_vpns()
    if wire.dropped:
        assert wire.now >= 3.0  # only the restart timer recovers a lost frame


def test_nas_without_vpn_option_rejects_it_and_ce_carries_on() -> None:
    wire = opened(Wire(*make_pair(vpn_peers=None)))
    assert wire.ce.ipcp.state == State.OPENED
    assert of_type(wire.ce_events, VpnOptionRejected) == [VpnOptionRejected()]
    assert of_type(wire.ce_events, AddressLearned) == [AddressLearned(CE_ADDRESS, NAS_ADDRESS)]
    assert of_type(wire.ce_events, VpnPeersLearned) == []
    assert not any(isinstance(o, VpnIpAddresses) for o in wire.ce.ipcp.policy.request_options())


def test_ce_in_no_vpn_learns_an_empty_membership() -> None:
    wire = opened(Wire(*make_pair(vpn_peers=lambda _ce: {})))
    assert of_type(wire.ce_events, VpnPeersLearned) == [VpnPeersLearned(())]
    assert of_type(wire.ce_events, VpnPeersChanged) == []


def test_many_peers_arrive_in_several_options() -> None:
    many = {3: [IPv4Address(0x0A030000 + i) for i in range(150)]}
    wire = opened(Wire(*make_pair(vpn_peers=lambda _ce: many)))
    (learned,) = of_type(wire.ce_events, VpnPeersLearned)
    assert isinstance(learned, VpnPeersLearned)
    assert learned.as_dict() == {3: frozenset(many[3])}


def test_max_configure_exhaustion_when_nas_is_silent() -> None:
    ce, nas = make_pair()
    wire = Wire(ce, nas, drop=lambda direction, _i: direction == "ce>nas")
    ce.start(0)  # the NAS never starts: nobody answers
    wire.run()
    assert ce.lcp.state == State.STOPPED
    assert wire.sent["ce>nas"] == 10  # Max-Configure Configure-Requests
    assert wire.now == 30.0  # ten restart intervals of 3 s
    assert of_type(wire.ce_events, LayerFinished) == [LayerFinished(Protocol.LCP)]
    assert ce.finished


def test_clean_terminate() -> None:
    wire = opened(Wire(*make_pair()))
    wire.ce.close(wire.now)
    wire.run()
    assert wire.ce.lcp.state == State.CLOSED
    assert wire.nas.lcp.state == State.STOPPED  # RFC 1661: after Terminate-Ack, wait for Down
    assert LayerDown(Protocol.IPCP) in wire.ce_events
    assert LayerFinished(Protocol.LCP) in wire.ce_events
    assert LayerDown(Protocol.LCP) in wire.nas_events
    assert wire.ce.finished
    assert wire.nas.finished


def test_nas_pushes_changed_vpn_peers_by_renegotiating_ipcp() -> None:
    peers = {7: [A("10.9.0.1"), A("10.9.0.2")], 12: [A("10.12.0.1")]}
    wire = opened(Wire(*make_pair(vpn_peers=lambda _ce: peers)))
    wire.ce_events.clear()
    peers[7] = [A("10.9.0.2"), A("10.9.0.3")]
    del peers[12]
    wire.nas.renegotiate_ipcp(wire.now)
    wire.run()
    assert (wire.ce.ipcp.state, wire.nas.ipcp.state) == (State.OPENED, State.OPENED)
    assert of_type(wire.ce_events, VpnPeersChanged) == [
        VpnPeersChanged(7, frozenset({A("10.9.0.3")}), frozenset({A("10.9.0.1")}), frozenset(peers[7])),
        VpnPeersChanged(12, frozenset(), frozenset({A("10.12.0.1")}), frozenset(), member=False),
    ]
    assert of_type(wire.ce_events, AddressLearned) == []  # unchanged, so not reported again
    assert wire.ce.lcp.state == State.OPENED


def test_echo_request_answered_and_dead_peer_detected() -> None:
    ce, nas = make_pair(echo_interval=10.0, echo_failures=3)
    wire = opened(Wire(ce, nas))
    assert ce.lcp.state == State.OPENED
    wire.run(until=35.0)
    assert ce.counters.echo_requests_sent >= 3
    assert ce.lcp.state == State.OPENED  # replies keep it alive
    wire.drop = lambda direction, _i: direction == "nas>ce"
    wire.run(until=200.0)
    assert LinkDead(3) in wire.ce_events
    assert ce.finished


def test_unknown_protocol_gets_protocol_reject() -> None:
    wire = opened(Wire(*make_pair()))
    ccp = bytes.fromhex("0101000f1a0478001804780015032f")
    wire.ce.receive_data(encode_hdlc(encode_frame(Frame(Protocol.CCP, ccp))), wire.now)
    out = wire.ce.data_to_send()
    assert wire.ce.counters.protocol_rejected == 1
    (frame,) = HdlcDeframer().feed(out)
    packet = decode_packet(decode_frame(frame).information, LCP_OPTIONS)
    assert isinstance(packet, ProtocolReject)
    assert packet.rejected_protocol == Protocol.CCP
    assert packet.rejected_information == ccp


def test_protocol_reject_of_ipcp_stops_ipcp_only() -> None:
    wire = opened(Wire(*make_pair()))
    reject = ProtocolReject(0x40, Protocol.IPCP, b"\x01\x01\x00\x04")
    wire.ce.receive_data(encode_hdlc(encode_frame(Frame(Protocol.LCP, reject.encode()))), wire.now)
    states = [wire.ce.ipcp.state]  # RFC 1661: Opened + RXJ- = tld,irc,str/5, then Terminate-Ack
    wire.run()
    states.append(wire.ce.ipcp.state)
    assert states == [State.STOPPING, State.STOPPED]
    assert LayerFinished(Protocol.IPCP) in wire.ce_events
    assert wire.ce.lcp.state == State.OPENED


def test_non_lcp_frames_before_lcp_opens_are_discarded() -> None:
    ce, _nas = make_pair()
    ce.start(0)
    ce.data_to_send()
    ce.receive_data(encode_hdlc(encode_frame(Frame(Protocol.IPCP, b"\x01\x01\x00\x04"))), 0)
    assert ce.counters.discarded_before_lcp == 1
    assert ce.data_to_send() == b""


def test_looped_back_line_is_detected_by_magic_number() -> None:
    rng = random.Random(5)
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32))
    ce.start(0)
    now = 0.0
    for _ in range(6):
        ce.receive_data(ce.data_to_send(), now)
        now += 3
        ce.handle_timer(now)
    # every copy of our own request is recognised; the link never opens with itself
    assert ce.lcp_policy.loopback_suspected == 6
    assert ce.lcp.state == State.REQ_SENT


def test_ce_acks_the_old_ip_addresses_option_like_pppd_sends_it() -> None:
    """oldaddrs.pcap: pppd asks ``01 0a 64400001 64400002`` (its address, ours); refusing it fails IPCP."""
    policy = CeIpcpPolicy()
    request = [IpAddresses(NAS_ADDRESS, CE_ADDRESS), IpCompressionProtocol.van_jacobson()]
    verdicts = policy.review(request)
    assert verdicts[0] == ACK
    assert verdicts[1].kind.value == "reject"  # we do not do VJ
    policy.peer_acked([request[0]])
    policy.our_acked(policy.request_options())
    events = policy.layer_up()
    assert AddressLearned(CE_ADDRESS, NAS_ADDRESS) in events


@pytest.mark.parametrize("asked", [A("0.0.0.0"), A("100.64.0.99")])
def test_nas_naks_wrong_or_unspecified_address(asked: IPv4Address) -> None:
    nas = NasIpcpPolicy(NasConfig(NAS_ADDRESS, CE_ADDRESS))
    (verdict,) = nas.review([IpAddress(asked)])
    assert verdict.suggestions == (IpAddress(CE_ADDRESS),)


def test_lcp_and_ipcp_layer_events_in_order() -> None:
    wire = opened(Wire(*make_pair()))
    ups = [e for e in wire.ce_events if isinstance(e, LayerUp)]
    assert ups == [LayerUp(Protocol.LCP), LayerUp(Protocol.IPCP)]
    assert NegotiationConfig().max_configure == 10


def test_whole_reads_with_several_frames_keep_every_fcs_good() -> None:
    """Deliver everything each side wrote in one chunk, as a pty read does: the first IPCP frame (sent
    with ACCM 0) often shares a read with the Ack that opened LCP. Found on a real pty pair."""
    ce, nas = make_pair()
    ce.start(0)
    nas.start(0)
    for _ in range(20):
        nas.receive_data(ce.data_to_send(), 0)
        ce.receive_data(nas.data_to_send(), 0)  # CE gets NAS's request and Ack in one read
    assert (ce.ipcp.state, nas.ipcp.state) == (State.OPENED, State.OPENED)
    assert ce._deframer.counters.bad_fcs == nas._deframer.counters.bad_fcs == 0


def test_nas_appends_the_address_once_when_the_ce_never_asked() -> None:
    """RFC 1661 5.3 (and pppd): a request without IP-Address gets a Nak carrying one, once."""
    nas = ControlProtocol(
        Protocol.IPCP, NasIpcpPolicy(NasConfig(NAS_ADDRESS, CE_ADDRESS, DNS1, DNS2)), codes=NCP_CODES
    )
    nas.open(0)
    nas.up(0)
    nas.take_packets()

    def answer(request: ConfigureRequest) -> list[bytes]:
        nas.receive(request.encode(), 0)
        return [p.encode() for p in nas.take_packets()]

    nak = ConfigureNak(1, (IpAddress(CE_ADDRESS),))
    assert answer(ConfigureRequest(1, (PrimaryDns(DNS1),))) == [nak.encode()]
    # appended once only: the same request is now Acked, a wrong DNS Nak'd without the address
    assert answer(ConfigureRequest(2, (PrimaryDns(DNS1),))) == [ConfigureAck(2, (PrimaryDns(DNS1),)).encode()]
    assert answer(ConfigureRequest(3, (PrimaryDns(DNS2),))) == [ConfigureNak(3, (PrimaryDns(DNS1),)).encode()]


class OldNas(NasIpcpPolicy):
    """A NAS from before RFC 1332: it knows IP-Addresses (1) but rejects IP-Address (3)."""

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        verdicts = super().review(options)
        return [REJECT if isinstance(o, IpAddress) else v for o, v in zip(options, verdicts, strict=True)]


def test_ce_falls_back_to_ip_addresses_when_the_nas_rejects_ip_address() -> None:
    rng = random.Random(5)
    ce = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32))
    nas = PppSession(
        OldNas(NasConfig(NAS_ADDRESS, CE_ADDRESS, DNS1, DNS2, vpn_peers=lambda _ce: PEERS)),
        random32=lambda: rng.getrandbits(32),
    )
    wire = opened(Wire(ce, nas))
    assert (ce.ipcp.state, nas.ipcp.state) == (State.OPENED, State.OPENED)
    assert of_type(wire.ce_events, AddressLearned) == [AddressLearned(CE_ADDRESS, NAS_ADDRESS)]
    assert of_type(wire.ce_events, VpnPeersLearned) == [expected_vpns()]
    assert of_type(wire.nas_events, PeerConfigured)
