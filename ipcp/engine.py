"""One control protocol (LCP or an NCP) driven by the RFC 1661 automaton, sans-IO.

Packets in (``receive``), time in (``now`` on every call), packets out (``take_packets``), events
out (``take_events``), one timer (``get_timer``/``handle_timer``). What to ask and what to accept
is the job of an :class:`OptionPolicy`; the RFC 1661 section 5 rules that are the same for every
protocol live here:

* Configure-Reject lists exactly the unacceptable options, in their original order, copied byte
  for byte; if anything is rejected, only the Reject is sent (the Naks wait for the next round).
* A Nak carries the policy's suggestions; after Max-Failure Naks without an Ack they become Rejects.
* Ack/Nak/Reject must carry the Identifier of the last Configure-Request; an Ack must list exactly
  its options and a Reject a subset of them, in order. Anything else is silently discarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from ipcp.events import LayerDown, LayerFinished, LayerStarted, LayerUp, PppEvent
from ipcp.fsm import Action, Event, State, transition
from ipcp.option import Option, OptionRegistry, RawOption, encode_options, split_options
from ipcp.packet import (
    LCP_CODES,
    Code,
    CodeReject,
    ConfigureNak,
    ConfigureRequest,
    EchoReply,
    Packet,
    ProtocolReject,
    TerminateAck,
    TerminateRequest,
    decode_header,
)
from options.errors import DecodeError
from options.wire import Reader

__all__ = [
    "ControlProtocol",
    "EngineCounters",
    "NegotiationConfig",
    "OptionPolicy",
    "Received",
    "Verdict",
    "VerdictKind",
]

Received = Option | RawOption
"""A received option: decoded, or raw where its data was malformed (then it can only be rejected)."""

_TIMER_STATES: Final = frozenset(
    {State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT}
)


class VerdictKind(Enum):
    ACK = "ack"
    NAK = "nak"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer to one received option. A Nak carries the options to suggest in its place
    (zero or more: RFC 1661 lets an option listed more than once be Nak'd with all acceptable values)."""

    kind: VerdictKind
    suggestions: tuple[Option, ...] = ()


ACK: Final = Verdict(VerdictKind.ACK)
REJECT: Final = Verdict(VerdictKind.REJECT)


class OptionPolicy(Protocol):
    """What one protocol asks for and accepts. The engine calls it; it never sends anything itself."""

    @property
    def registry(self) -> OptionRegistry: ...

    def request_options(self) -> tuple[Option, ...]:
        """The options of our next Configure-Request."""

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        """One verdict per received option, without changing state (the answer may not be sent)."""

    def nak_additions(self, options: Sequence[Received]) -> tuple[Option, ...]:
        """Options the peer did not ask for but should (RFC 1661 5.3: a Nak MAY append them).

        Called only when nothing in the request is rejected; a non-empty answer turns an Ack into a
        Nak. May change state (e.g. "append it once"), since the answer is then sent.
        """

    def peer_acked(self, options: Sequence[Option]) -> None:
        """We sent a Configure-Ack for these peer options: they are now in force."""

    def our_acked(self, options: Sequence[Option]) -> None:
        """The peer acknowledged our request."""

    def our_naked(self, options: Sequence[Received]) -> None:
        """The peer suggested these values; adjust the next request."""

    def our_rejected(self, options: Sequence[RawOption]) -> None:
        """The peer refused these options; the next request MUST NOT include them."""

    def layer_up(self) -> list[PppEvent]:
        """This-Layer-Up: both directions agreed. Return what the user should learn."""

    def layer_down(self) -> list[PppEvent]:
        """This-Layer-Down: forget what was negotiated."""

    def link_down(self) -> None:
        """NCPs: LCP went down, so what was learned on this link is void (a renegotiation of the NCP
        alone keeps it). The session calls it after the NCP's own This-Layer-Down."""


@dataclass(frozen=True, slots=True)
class NegotiationConfig:
    """RFC 1661 section 4.6 counters and timer, with the RFC's suggested defaults."""

    restart_interval: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5

    def __post_init__(self) -> None:
        if self.restart_interval <= 0:
            raise ValueError("the restart interval must be positive")
        if min(self.max_configure, self.max_terminate, self.max_failure) < 1:
            raise ValueError("Max-Configure, Max-Terminate and Max-Failure must be at least 1")


@dataclass(slots=True)
class EngineCounters:
    """Received packets the engine discarded, by reason."""

    malformed: int = 0
    bad_identifier: int = 0
    ack_mismatch: int = 0
    reject_not_subset: int = 0
    not_running: int = 0
    transitions: int = 0
    history: list[tuple[State, Event, State]] = field(default_factory=list)


class ControlProtocol:
    """LCP or an NCP: the automaton plus RFC 1661 section 5 packet handling."""

    HISTORY_LIMIT: Final = 64

    def __init__(
        self,
        protocol: int,
        policy: OptionPolicy,
        *,
        codes: frozenset[int],
        config: NegotiationConfig | None = None,
        first_identifier: int = 1,
        magic: int = 0,
    ) -> None:
        self.protocol = protocol
        self.policy = policy
        self.codes = codes
        self.config = config or NegotiationConfig()
        self.state = State.INITIAL
        self.magic = magic  # LCP: our Magic-Number for Echo-Reply; 0 when not negotiated
        self.counters = EngineCounters()
        self._restart_count = 0
        self._failure_count = 0
        self._deadline: float | None = None
        self._next_id = first_identifier & 0xFF
        self._request: ConfigureRequest | None = None
        self._request_wire = b""
        self._request_raws: list[bytes] = []
        self._echo: tuple[Code, int, bytes] = (Code.ECHO_REQUEST, 0, b"")
        self._reply: Packet | None = None  # the sca/scn answer prepared for the current RCR
        self._peer_options: tuple[Option, ...] = ()
        self._received: bytes = b""  # the packet being handled (for Code-Reject)
        self._last_naked: bytes = b""  # the last Configure-Request we answered with a Nak
        self._received_id = 0
        self._now = 0.0
        self._packets: list[Packet] = []
        self._events: list[PppEvent] = []

    # -- outputs ----------------------------------------------------------------------------------

    def take_packets(self) -> list[Packet]:
        out, self._packets = self._packets, []
        return out

    def take_events(self) -> list[PppEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to be called, or None."""
        return self._deadline

    # -- administrative and lower-layer events ----------------------------------------------------

    def up(self, now: float) -> None:
        self._handle(Event.UP, now)

    def down(self, now: float) -> None:
        self._handle(Event.DOWN, now)

    def open(self, now: float) -> None:
        self._handle(Event.OPEN, now)

    def close(self, now: float) -> None:
        self._handle(Event.CLOSE, now)

    def restart(self, now: float) -> None:
        """Renegotiate from Opened: Down then Up, which sends a fresh Configure-Request.

        This is how a NAS pushes changed values (new VPN peers): the peer's automaton answers our
        Configure-Request in Opened with ``tld,scr,sca/8`` and asks again, and our Nak carries the
        new values.
        """
        if self.state == State.OPENED:
            self._handle(Event.DOWN, now)
            self._handle(Event.UP, now)

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        self._handle(Event.TO_PLUS if self._restart_count > 0 else Event.TO_MINUS, now)

    def rejected_by_peer(self, catastrophic: bool, now: float) -> None:
        """A Protocol-Reject (routed here by LCP) or Code-Reject: RXJ- if we cannot do without it."""
        self._handle(Event.RXJ_MINUS if catastrophic else Event.RXJ_PLUS, now)

    # -- received packets -------------------------------------------------------------------------

    def receive(self, packet: bytes, now: float) -> Packet | None:
        """Handle one packet (the Information field of a frame of this protocol).

        Returns packets the automaton does not consume but a session may want (Protocol-Reject,
        Echo-Reply); discards what RFC 1661 says to discard, counting why.
        """
        if self.state in (State.INITIAL, State.STARTING):
            self.counters.not_running += 1  # lower layer not up: no packets expected
            return None
        try:
            header = decode_header(packet)
        except DecodeError:
            self.counters.malformed += 1
            return None
        self._received = packet[: header.data_end]
        self._received_id = header.identifier
        if header.code not in self.codes or header.code not in LCP_CODES:
            self._handle(Event.RUC, now)
            return None
        try:
            return self._dispatch(Code(header.code), packet, header.data_start, header.data_end, now)
        except DecodeError:
            self.counters.malformed += 1
            return None

    def _dispatch(self, code: Code, buf: bytes, start: int, end: int, now: float) -> Packet | None:
        if code == Code.CONFIGURE_REQUEST:
            self._configure_request(buf, start, end, now)
        elif code == Code.CONFIGURE_ACK:
            self._configure_ack(buf, start, end, now)
        elif code in (Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT):
            self._configure_nak_or_reject(code, buf, start, end, now)
        elif code == Code.TERMINATE_REQUEST:
            self._handle(Event.RTR, now)
        elif code == Code.TERMINATE_ACK:
            self._handle(Event.RTA, now)
        elif code == Code.CODE_REJECT:
            rejected = Reader(buf, start, end).pull_u8("rejected code")
            # RFC 1661 5.6: a rejected code we need (1-7) is catastrophic; Echo/Discard/Protocol-Reject not.
            self._handle(Event.RXJ_MINUS if 1 <= rejected <= Code.CODE_REJECT else Event.RXJ_PLUS, now)
        elif code == Code.PROTOCOL_REJECT:
            reader = Reader(buf, start, end)
            protocol = reader.pull_u16("rejected protocol")
            return ProtocolReject(self._received_id, protocol, reader.pull_rest())
        else:  # Echo-Request, Echo-Reply, Discard-Request
            reader = Reader(buf, start, end)
            magic = reader.pull_u32("magic number")
            data = reader.pull_rest()
            self._echo = (code, magic, data)
            self._handle(Event.RXR, now)
            if code == Code.ECHO_REPLY:
                return EchoReply(self._received_id, magic, data)
        return None

    def _configure_request(self, buf: bytes, start: int, end: int, now: float) -> None:
        received = list(self.policy.registry.decode_each(buf, start, end))
        verdicts = self.policy.review(received)
        if len(verdicts) != len(received):
            raise AssertionError("the policy must return one verdict per option")
        rejected = [_wire(o) for o, v in zip(received, verdicts, strict=True) if v.kind == VerdictKind.REJECT]
        naks = [(o, v) for o, v in zip(received, verdicts, strict=True) if v.kind == VerdictKind.NAK]
        failed = self._failure_count >= self.config.max_failure
        # RFC 1661 5.3: "Options which were not included in the Configure-Request, but which are
        # desired by the receiver [...] MAY be appended" to a Nak -- never to a Reject, never after
        # Max-Failure (the peer had its chances; an Ack lets the link come up without them).
        additions = () if rejected or failed else self.policy.nak_additions(received)
        if not rejected and naks and failed:
            # RFC 1661 4.6 Max-Failure: "Configure-Reject packets are sent instead of Configure-Naks".
            rejected = [_wire(o) for o, _v in naks]
        if rejected:
            self._reply = _RawConfigure(Code.CONFIGURE_REJECT, self._received_id, b"".join(rejected))
            event = Event.RCR_MINUS
        elif naks or additions:
            suggestions = tuple(s for _o, v in naks for s in v.suggestions) + additions
            self._reply = ConfigureNak(self._received_id, suggestions)
            event = Event.RCR_MINUS
        else:
            # RFC 1661 5.2: the Ack's options "MUST exactly match those of the Configure-Request".
            self._reply = _RawConfigure(Code.CONFIGURE_ACK, self._received_id, buf[start:end])
            self._peer_options = tuple(o for o in received if isinstance(o, Option))
            event = Event.RCR_PLUS
        self._handle(event, now)

    def _configure_ack(self, buf: bytes, start: int, end: int, now: float) -> None:
        if self._request is None or self._received_id != self._request.identifier:
            self.counters.bad_identifier += 1
            return
        if buf[start:end] != self._request_wire:
            self.counters.ack_mismatch += 1  # RFC 1661 5.2: invalid packets are silently discarded
            return
        self.policy.our_acked(self._request.options)
        self._request = None  # a second Ack for the same request is a duplicate, not a new event
        self._handle(Event.RCA, now)

    def _configure_nak_or_reject(self, code: Code, buf: bytes, start: int, end: int, now: float) -> None:
        if self._request is None or self._received_id != self._request.identifier:
            self.counters.bad_identifier += 1
            return
        if code == Code.CONFIGURE_NAK:
            self.policy.our_naked(list(self.policy.registry.decode_each(buf, start, end)))
        else:
            raws = split_options(buf, start, end)
            if not _is_ordered_subset([r.raw for r in raws], self._request_raws):
                self.counters.reject_not_subset += 1  # RFC 1661 5.4: must be a proper subset
                return
            self.policy.our_rejected(raws)
        self._request = None
        self._handle(Event.RCN, now)

    # -- the automaton ----------------------------------------------------------------------------

    def _handle(self, event: Event, now: float) -> None:
        self._now = now
        actions, target = transition(self.state, event)
        before = self.state
        self.state = target
        self.counters.transitions += 1
        history = self.counters.history
        history.append((before, event, target))
        if len(history) > self.HISTORY_LIMIT:
            del history[0]
        for action in actions:
            self._ACTIONS[action](self)
        if target not in _TIMER_STATES:
            self._deadline = None  # RFC 1661 4.2: the Restart timer is not running in these states

    def _tlu(self) -> None:
        self._events.append(LayerUp(self.protocol))
        self._events.extend(self.policy.layer_up())

    def _tld(self) -> None:
        self._events.append(LayerDown(self.protocol))
        self._events.extend(self.policy.layer_down())

    def _tls(self) -> None:
        self._events.append(LayerStarted(self.protocol))

    def _tlf(self) -> None:
        self._events.append(LayerFinished(self.protocol))

    def _irc(self) -> None:
        closing = self.state in (State.CLOSING, State.STOPPING)
        self._restart_count = self.config.max_terminate if closing else self.config.max_configure
        self._failure_count = 0

    def _zrc(self) -> None:
        self._restart_count = 0
        self._start_timer()

    def _scr(self) -> None:
        options = self.policy.request_options()
        wire = encode_options(options)
        # RFC 1661 5.1: "The Identifier field MUST be changed whenever the contents of the Options
        # field changes, and whenever a valid reply has been received for a previous request. For
        # retransmissions, the Identifier MAY remain unchanged." We keep it for a retransmission so
        # the peer can tell one from a new round (see Max-Failure in _scn).
        if self._request is not None and wire == self._request_wire:
            identifier = self._request.identifier
        else:
            identifier = self._new_id()
        self._request = ConfigureRequest(identifier, options)
        self._request_wire = wire
        self._request_raws = [o.encode() for o in options]
        self._restart_count -= 1
        self._start_timer()
        self._packets.append(self._request)

    def _sca(self) -> None:
        reply = self._reply
        assert isinstance(reply, _RawConfigure)
        self._packets.append(reply)
        self._failure_count = 0
        self.policy.peer_acked(self._peer_options)

    def _scn(self) -> None:
        reply = self._reply
        assert reply is not None
        if reply.code == Code.CONFIGURE_NAK and self._received != self._last_naked:
            # A retransmission of the request we Nak'd last (same Identifier and options) means our
            # Nak was lost, not that the negotiation fails to converge: it does not count.
            self._failure_count += 1
            self._last_naked = self._received
        self._packets.append(reply)

    def _str(self) -> None:
        self._restart_count -= 1
        self._start_timer()
        self._packets.append(TerminateRequest(self._new_id()))

    def _sta(self) -> None:
        self._packets.append(TerminateAck(self._received_id))

    def _scj(self) -> None:
        # RFC 1661 5.6: the rejected packet, "truncated to comply with the peer's established MRU";
        # 1500 minus our header is what every peer must accept.
        self._packets.append(CodeReject(self._new_id(), self._received[:1496]))

    def _ser(self) -> None:
        code, _magic, data = self._echo
        if code == Code.ECHO_REQUEST:
            self._packets.append(EchoReply(self._received_id, self.magic, data))

    _ACTIONS: Final = {
        Action.TLU: _tlu,
        Action.TLD: _tld,
        Action.TLS: _tls,
        Action.TLF: _tlf,
        Action.IRC: _irc,
        Action.ZRC: _zrc,
        Action.SCR: _scr,
        Action.SCA: _sca,
        Action.SCN: _scn,
        Action.STR: _str,
        Action.STA: _sta,
        Action.SCJ: _scj,
        Action.SER: _ser,
    }

    def _start_timer(self) -> None:
        self._deadline = self._now + self.config.restart_interval

    def _new_id(self) -> int:
        identifier = self._next_id
        self._next_id = (identifier + 1) & 0xFF
        return identifier


@dataclass(frozen=True, slots=True)
class _RawConfigure(Packet):
    """An Ack or Reject whose options are copied byte for byte from the request (RFC 1661 5.2, 5.4)."""

    raw_code: int
    identifier: int
    options_wire: bytes

    @property
    def code(self) -> int:
        return self.raw_code

    def encode_data(self) -> bytes:
        return self.options_wire


def _wire(option: Received) -> bytes:
    return option.raw if isinstance(option, RawOption) else option.encode()


def _is_ordered_subset(part: list[bytes], whole: list[bytes]) -> bool:
    it = iter(whole)
    return all(any(p == w for w in it) for p in part)
