"""A PPP link, sans-IO: line bytes in, line bytes and events out, time passed in.

Composes HDLC-like framing, LCP (with Echo keepalive), IPCP, and the rules between them:
non-LCP packets are discarded until LCP is Opened (RFC 1661 section 3.2); an unknown protocol in
Opened gets a Protocol-Reject (section 5.7); LCP frames always keep ``FF 03`` and escape every
control character, other frames use what LCP negotiated only once it is Opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ipcp.engine import ControlProtocol, NegotiationConfig, OptionPolicy
from ipcp.events import IpDatagram, LayerDown, LayerFinished, LayerUp, LinkDead, PppEvent
from ipcp.frame import Frame, Protocol, decode_frame, encode_frame
from ipcp.fsm import State
from ipcp.hdlc import ACCM_ALL, HdlcDeframer, encode_hdlc
from ipcp.lcp import LcpConfig, LcpPolicy, LinkParameters
from ipcp.packet import LCP_CODES, NCP_CODES, EchoReply, EchoRequest, Packet, ProtocolReject
from options.errors import DecodeError

__all__ = ["PppSession", "SessionCounters"]

_HEADER_ROOM = 4 + 4  # Address/Control + Protocol, and FCS-32 at most


@dataclass(slots=True)
class SessionCounters:
    malformed_frames: int = 0
    discarded_before_lcp: int = 0
    discarded_ip_before_ipcp: int = 0
    protocol_rejected: int = 0
    echo_requests_sent: int = 0


class PppSession:
    """One end of a PPP link running LCP and IPCP with the given IPCP policy (CE or NAS)."""

    def __init__(
        self,
        ipcp_policy: OptionPolicy,
        *,
        random32: Callable[[], int],
        lcp_config: LcpConfig | None = None,
        negotiation: NegotiationConfig | None = None,
        echo_interval: float | None = None,
        echo_failures: int = 4,
    ) -> None:
        self.lcp_policy = LcpPolicy(lcp_config, random32=random32)
        self.lcp = ControlProtocol(Protocol.LCP, self.lcp_policy, codes=LCP_CODES, config=negotiation)
        self.ipcp = ControlProtocol(Protocol.IPCP, ipcp_policy, codes=NCP_CODES, config=negotiation)
        self.counters = SessionCounters()
        self._link = LinkParameters()
        self._deframer = HdlcDeframer(max_frame=self.lcp_policy.config.mru + _HEADER_ROOM)
        self._out = bytearray()
        self._events: list[PppEvent] = []
        self._echo_interval = echo_interval
        self._echo_failures = echo_failures
        self._echo_deadline: float | None = None
        self._echo_outstanding = 0
        self._next_id = 0x80  # Protocol-Reject and Echo-Request identifiers, apart from the automaton's

    # -- user calls ---------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The line is up and we want the link: LCP Open + Up, IPCP Open (it comes Up with LCP)."""
        self.lcp.open(now)
        self.ipcp.open(now)
        self.lcp.up(now)
        self._pump(now)

    def close(self, now: float) -> None:
        """Administrative Close: LCP Terminate-Request; IPCP goes down with LCP.

        No IPCP Terminate-Request of its own: it would follow LCP's on the line and reach a peer
        whose LCP is no longer Opened (pppd logs "Discarded non-LCP packet when LCP not open").
        """
        self.lcp.close(now)
        self._pump(now)

    def line_down(self, now: float) -> None:
        """The line went away (hang-up, EOF): Down to LCP, which brings IPCP down too."""
        if self.lcp.state not in (State.INITIAL, State.STARTING):
            self.lcp.down(now)
        self._pump(now)

    def renegotiate_ipcp(self, now: float) -> None:
        """NAS: push new values (e.g. VPN peers) by sending a fresh IPCP Configure-Request."""
        self.ipcp.restart(now)
        self._pump(now)

    def send_datagram(self, datagram: bytes) -> bool:
        """Queue an IPv4 datagram; False (and nothing sent) unless IPCP is Opened."""
        if self.ipcp.state != State.OPENED:
            return False
        self._send(Frame(Protocol.IPV4, datagram))
        return True

    def receive_data(self, data: bytes, now: float) -> None:
        for raw in self._deframer.frames(data):
            try:
                frame = decode_frame(raw)
            except DecodeError:
                self.counters.malformed_frames += 1
                continue
            self._receive_frame(frame, now)
            # Act on each frame before reading the next: the Ack that opens LCP changes the receive
            # ACCM, and the peer's next frame (same read) is already sent with the negotiated one.
            self._pump(now)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_events(self) -> list[PppEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        timers = [
            t for t in (self.lcp.get_timer(), self.ipcp.get_timer(), self._echo_deadline) if t is not None
        ]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self.lcp.handle_timer(now)
        self.ipcp.handle_timer(now)
        if self._echo_deadline is not None and now >= self._echo_deadline:
            self._echo_tick(now)
        self._pump(now)

    @property
    def finished(self) -> bool:
        """LCP reached This-Layer-Finished and sits in Closed/Stopped (or never started)."""
        return self.lcp.state in (State.INITIAL, State.STARTING, State.CLOSED, State.STOPPED)

    @property
    def link(self) -> LinkParameters:
        return self._link

    # -- internals ----------------------------------------------------------------------------------

    def _receive_frame(self, frame: Frame, now: float) -> None:
        if frame.protocol == Protocol.LCP:
            extra = self.lcp.receive(frame.information, now)
            if isinstance(extra, ProtocolReject):
                self._protocol_rejected(extra.rejected_protocol, now)
            elif isinstance(extra, EchoReply):
                self._echo_outstanding = 0
            return
        if self.lcp.state != State.OPENED:
            # RFC 1661 3.2: "Any non-LCP packets received during this phase MUST be silently discarded."
            self.counters.discarded_before_lcp += 1
        elif frame.protocol == Protocol.IPCP:
            self.ipcp.receive(frame.information, now)
        elif frame.protocol == Protocol.IPV4:
            if self.ipcp.state == State.OPENED:
                self._events.append(IpDatagram(frame.information))
            else:
                self.counters.discarded_ip_before_ipcp += 1
        else:
            self.counters.protocol_rejected += 1
            room = self._link.peer_mru - 6  # LCP header (4) + Rejected-Protocol (2)
            self._send_lcp(ProtocolReject(self._new_id(), frame.protocol, frame.information[:room]))

    def _protocol_rejected(self, protocol: int, now: float) -> None:
        if protocol == Protocol.LCP:
            self.lcp.rejected_by_peer(True, now)
        elif protocol == Protocol.IPCP:
            self.ipcp.rejected_by_peer(True, now)  # the peer cannot do IP: IPCP stops
        else:
            self.lcp.rejected_by_peer(False, now)

    def _pump(self, now: float) -> None:
        """Move packets and events out of both automata until neither has anything left.

        LCP packets are framed before LCP events are acted on, so the Ack that opens LCP still goes
        out with the default framing and the IPCP packets that follow use the negotiated one.
        """
        while True:
            lcp_packets, lcp_events = self.lcp.take_packets(), self.lcp.take_events()
            for packet in lcp_packets:
                self._send_lcp(packet)
            for event in lcp_events:
                self._lcp_event(event, now)
            ipcp_packets, ipcp_events = self.ipcp.take_packets(), self.ipcp.take_events()
            for packet in ipcp_packets:
                self._send(Frame(Protocol.IPCP, packet.encode()))
            self._events.extend(ipcp_events)
            if not (lcp_packets or lcp_events or ipcp_packets or ipcp_events):
                return

    def _lcp_event(self, event: PppEvent, now: float) -> None:
        self._events.append(event)
        if isinstance(event, LayerUp):
            self._link = self.lcp_policy.parameters
            self._deframer.receive_accm = self._link.receive_accm
            self.lcp.magic = self._link.magic
            if self._echo_interval is not None:
                self._echo_outstanding = 0
                self._echo_deadline = now + self._echo_interval
            self.ipcp.up(now)
        elif isinstance(event, LayerDown):
            self._link = LinkParameters()
            self._deframer.receive_accm = ACCM_ALL
            self._echo_deadline = None
            self.ipcp.down(now)
            self.ipcp.policy.link_down()
        elif isinstance(event, LayerFinished):
            self._echo_deadline = None

    def _echo_tick(self, now: float) -> None:
        assert self._echo_interval is not None
        if self._echo_outstanding >= self._echo_failures:
            self._events.append(LinkDead(self._echo_outstanding))
            self._echo_deadline = None
            self.lcp.close(now)
            return
        self._echo_outstanding += 1
        self.counters.echo_requests_sent += 1
        self._send_lcp(EchoRequest(self._new_id(), self._link.magic))
        self._echo_deadline = now + self._echo_interval

    def _send_lcp(self, packet: Packet) -> None:
        # RFC 1662 3.2/7.1: LCP keeps Address/Control and, to be safe, the default ACCM.
        self._out += encode_hdlc(encode_frame(Frame(Protocol.LCP, packet.encode())), accm=ACCM_ALL)

    def _send(self, frame: Frame) -> None:
        link = self._link
        wire = encode_frame(frame, acfc=link.transmit_acfc, pfc=link.transmit_pfc)
        self._out += encode_hdlc(wire, accm=link.transmit_accm)

    def _new_id(self) -> int:
        identifier = self._next_id
        self._next_id = (identifier + 1) & 0xFF
        return identifier
