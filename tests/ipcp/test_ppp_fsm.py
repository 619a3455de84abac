"""The RFC 1661 automaton: the table, and the engine under random inputs, checked against an
expected table written here independently (one column per state, as read off RFC 1661 4.1)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcp.engine import ACK, REJECT, ControlProtocol, NegotiationConfig, Received, Verdict, VerdictKind
from ipcp.events import LayerDown, LayerFinished, LayerStarted, LayerUp, PppEvent
from ipcp.fsm import TABLE, Event, IllegalTransitionError, State, transition
from ipcp.option import Option, OptionRegistry, RawOption, UnknownOption
from ipcp.packet import (
    LCP_CODES,
    Code,
    ConfigureAck,
    ConfigureNak,
    ConfigureReject,
    ConfigureRequest,
    EchoRequest,
    Packet,
    TerminateAck,
    TerminateRequest,
    UnknownCodePacket,
)

# Expected table, column by column (state -> event -> "actions/next"), "" for the RFC's "-".
E = [
    "Up",
    "Down",
    "Open",
    "Close",
    "TO+",
    "TO-",
    "RCR+",
    "RCR-",
    "RCA",
    "RCN",
    "RTR",
    "RTA",
    "RUC",
    "RXJ+",
    "RXJ-",
    "RXR",
]
COLUMNS: dict[State, list[str]] = {
    State.INITIAL: ["/2", "", "tls/1", "/0", "", "", "", "", "", "", "", "", "", "", "", ""],
    State.STARTING: ["irc,scr/6", "", "/1", "tlf/0", "", "", "", "", "", "", "", "", "", "", "", ""],
    State.CLOSED: ["", "/0", "irc,scr/6", "/2", "", "", "sta/2", "sta/2", "sta/2", "sta/2", "sta/2", "/2",
                   "scj/2", "/2", "tlf/2", "/2"],
    State.STOPPED: ["", "tls/1", "/3", "/2", "", "", "irc,scr,sca/8", "irc,scr,scn/6", "sta/3", "sta/3",
                    "sta/3", "/3", "scj/3", "/3", "tlf/3", "/3"],
    State.CLOSING: ["", "/0", "/5", "/4", "str/4", "tlf/2", "/4", "/4", "/4", "/4", "sta/4", "tlf/2",
                    "scj/4", "/4", "tlf/2", "/4"],
    State.STOPPING: ["", "/1", "/5", "/4", "str/5", "tlf/3", "/5", "/5", "/5", "/5", "sta/5", "tlf/3",
                     "scj/5", "/5", "tlf/3", "/5"],
    State.REQ_SENT: ["", "/1", "/6", "irc,str/4", "scr/6", "tlf/3", "sca/8", "scn/6", "irc/7", "irc,scr/6",
                     "sta/6", "/6", "scj/6", "/6", "tlf/3", "/6"],
    State.ACK_RCVD: ["", "/1", "/7", "irc,str/4", "scr/6", "tlf/3", "sca,tlu/9", "scn/7", "scr/6", "scr/6",
                     "sta/6", "/6", "scj/7", "/6", "tlf/3", "/7"],
    State.ACK_SENT: ["", "/1", "/8", "irc,str/4", "scr/8", "tlf/3", "sca/8", "scn/6", "irc,tlu/9",
                     "irc,scr/8", "sta/6", "/8", "scj/8", "/8", "tlf/3", "/8"],
    State.OPENED: ["", "tld/1", "/9", "tld,irc,str/4", "", "", "tld,scr,sca/8", "tld,scr,scn/6", "tld,scr/6",
                   "tld,scr/6", "tld,zrc,sta/5", "tld,scr/6", "scj/9", "/9", "tld,irc,str/5", "ser/9"],
}  # fmt: skip


def state_of(engine: ControlProtocol) -> State:
    """The state, read through a call so mypy does not carry a narrowed literal across a receive."""
    return engine.state


def expected(state: State, event: Event) -> tuple[tuple[str, ...], State] | None:
    cell = COLUMNS[state][E.index(event.value)]
    if not cell:
        return None
    actions, _, target = cell.partition("/")
    return tuple(a for a in actions.split(",") if a), State(int(target))


def test_table_matches_the_independent_expectation_cell_by_cell() -> None:
    for state in State:
        for event in Event:
            want = expected(state, event)
            if want is None:
                assert (state, event) not in TABLE
                with pytest.raises(IllegalTransitionError):
                    transition(state, event)
            else:
                actions, target = transition(state, event)
                assert (tuple(a.value for a in actions), target) == want, (state, event)


# --- the engine under random inputs ------------------------------------------------------------

REGISTRY = OptionRegistry("test")
ASK = UnknownOption(1, b"ask")


class StubPolicy:
    """Acks type 1, Naks type 2 (suggesting 2/"ok"), rejects the rest; asks for ASK until rejected."""

    def __init__(self) -> None:
        self.want = True
        self.ups = 0

    @property
    def registry(self) -> OptionRegistry:
        return REGISTRY

    def request_options(self) -> tuple[Option, ...]:
        return (ASK,) if self.want else ()

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        out = []
        for o in options:
            t = o.option_type if isinstance(o, RawOption) else o.type_code
            out.append(
                ACK if t == 1 else Verdict(VerdictKind.NAK, (UnknownOption(2, b"ok"),)) if t == 2 else REJECT
            )
        return out

    def nak_additions(self, options: Sequence[Received]) -> tuple[Option, ...]:
        return ()

    def link_down(self) -> None:
        pass

    def peer_acked(self, options: Sequence[Option]) -> None:
        pass

    def our_acked(self, options: Sequence[Option]) -> None:
        pass

    def our_naked(self, options: Sequence[Received]) -> None:
        pass

    def our_rejected(self, options: Sequence[RawOption]) -> None:
        self.want = False

    def layer_up(self) -> list[PppEvent]:
        self.ups += 1
        return []

    def layer_down(self) -> list[PppEvent]:
        return []


SENDS = {"scr": Code.CONFIGURE_REQUEST, "sca": Code.CONFIGURE_ACK, "str": Code.TERMINATE_REQUEST,
         "sta": Code.TERMINATE_ACK, "scj": Code.CODE_REJECT, "ser": Code.ECHO_REPLY}  # fmt: skip
LAYER = {"tlu": LayerUp, "tld": LayerDown, "tls": LayerStarted, "tlf": LayerFinished}

INPUTS = ["up", "down", "open", "close", "timeout", "rcr+", "rcr-nak", "rcr-rej", "rca", "rca-wrong-id",
          "rcn", "rcj", "rtr", "rta", "ruc", "rxj+", "rxj-", "echo"]  # fmt: skip


def _packet_for(name: str, engine: ControlProtocol) -> Packet | None:
    last = engine._request
    ident = last.identifier if last is not None else 0
    table: dict[str, Packet | None] = {
        "rcr+": ConfigureRequest(9, (UnknownOption(1, b"a"),)),
        "rcr-nak": ConfigureRequest(9, (UnknownOption(1, b"a"), UnknownOption(2, b"?"))),
        "rcr-rej": ConfigureRequest(9, (UnknownOption(2, b"?"), UnknownOption(77, b"no"))),
        "rca": ConfigureAck(ident, last.options) if last is not None else None,
        "rca-wrong-id": ConfigureAck((ident + 1) & 0xFF, last.options) if last is not None else None,
        "rcn": ConfigureNak(ident, (UnknownOption(1, b"other"),)) if last is not None else None,
        "rcj": ConfigureReject(ident, last.options) if last is not None and last.options else None,
        "rtr": TerminateRequest(5),
        "rta": TerminateAck(5),
        "ruc": UnknownCodePacket(42, 3, b"?"),
        "rxj+": UnknownCodePacket(Code.CODE_REJECT, 4, bytes([Code.ECHO_REQUEST, 1, 0, 8, 0, 0, 0, 0])),
        "rxj-": UnknownCodePacket(Code.CODE_REJECT, 4, bytes([Code.CONFIGURE_REQUEST, 1, 0, 4])),
        "echo": EchoRequest(6, 0x1234, b"hi"),
    }
    return table[name]


EVENT_OF = {"up": Event.UP, "down": Event.DOWN, "open": Event.OPEN, "close": Event.CLOSE,
            "rcr+": Event.RCR_PLUS, "rcr-nak": Event.RCR_MINUS, "rcr-rej": Event.RCR_MINUS, "rca": Event.RCA,
            "rcn": Event.RCN,
            "rcj": Event.RCN, "rtr": Event.RTR, "rta": Event.RTA, "ruc": Event.RUC, "rxj+": Event.RXJ_PLUS,
            "rxj-": Event.RXJ_MINUS, "echo": Event.RXR}  # fmt: skip


@settings(max_examples=300)
@given(st.lists(st.sampled_from(INPUTS), max_size=60))
def test_random_inputs_follow_the_rfc_table(inputs: list[str]) -> None:
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES, config=NegotiationConfig(max_configure=3))
    now = 0.0
    for name in inputs:
        before = engine.state
        transitions = engine.counters.transitions
        if name == "timeout":
            deadline = engine.get_timer()
            if deadline is None:
                continue
            now = deadline
            event = Event.TO_PLUS if engine._restart_count > 0 else Event.TO_MINUS
            engine.handle_timer(now)
        elif name in ("up", "down", "open", "close"):
            event = EVENT_OF[name]
            if expected(before, event) is None:
                with pytest.raises(IllegalTransitionError):
                    getattr(engine, name)(now)
                assert engine.state == before
                continue
            getattr(engine, name)(now)
        else:
            packet = _packet_for(name, engine)
            if packet is None:
                continue
            engine.receive(packet.encode(), now)
            if before in (State.INITIAL, State.STARTING) or name == "rca-wrong-id":
                assert engine.counters.transitions == transitions  # discarded, no event
                assert engine.take_packets() == []
                continue
            event = EVENT_OF[name]
        want = expected(before, event)
        assert want is not None, (before, event)
        actions, target = want
        assert engine.state == target, (before, event)
        assert engine.counters.history[-1] == (before, event, target)
        sent = [p.code for p in engine.take_packets()]
        want_codes = [SENDS[a] for a in actions if a in SENDS and not (a == "ser" and name != "echo")]
        if "scn" in actions:
            want_codes.insert(
                [a for a in actions if a in SENDS or a == "scn"].index("scn"),
                Code.CONFIGURE_REJECT if name == "rcr-rej" else Code.CONFIGURE_NAK,
            )
        assert sent == want_codes, (before, event, actions)
        layer = [type(e) for e in engine.take_events()]
        assert layer == [LAYER[a] for a in actions if a in LAYER]
        running = target in (State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT)
        if not running:
            assert engine.get_timer() is None  # RFC 1661 4.2: the Restart timer is not running


def test_max_configure_then_stopped() -> None:
    engine = ControlProtocol(
        0xC021, StubPolicy(), codes=LCP_CODES, config=NegotiationConfig(restart_interval=2)
    )
    engine.open(0)
    engine.up(0)
    sent = len(engine.take_packets())
    now = 0.0
    while engine.get_timer() is not None:
        now = engine.get_timer() or now
        engine.handle_timer(now)
        sent += len(engine.take_packets())
    assert sent == 10  # Max-Configure
    assert now == 20.0
    assert engine.state == State.STOPPED
    assert isinstance(engine.take_events()[-1], LayerFinished)


def test_max_terminate_then_closed() -> None:
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES)
    engine.open(0)
    engine.up(0)
    engine.close(1)
    packets = engine.take_packets()
    assert [p.code for p in packets] == [Code.CONFIGURE_REQUEST, Code.TERMINATE_REQUEST]
    engine.handle_timer(4)
    assert [p.code for p in engine.take_packets()] == [Code.TERMINATE_REQUEST]
    engine.handle_timer(7)
    assert engine.take_packets() == []
    assert engine.state == State.CLOSED


def test_reject_lists_only_unacceptable_options_in_order_byte_for_byte() -> None:
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES)
    engine.open(0)
    engine.up(0)
    engine.take_packets()
    request = bytes.fromhex("0107 0100 0403 0101 6162 0204 3f3f 4d03 7a01 0305 6173 6b")
    wire = bytes((1, 0x33)) + (4 + len(request)).to_bytes(2, "big") + request
    # options: 01 03 01 / 00 04 03 01 / 01 01 ... -> build from parts instead for clarity
    parts = [b"\x01\x03a", b"\x4d\x04zz", b"\x02\x03?", b"\x63\x02"]
    wire = b"\x01\x33" + (4 + sum(map(len, parts))).to_bytes(2, "big") + b"".join(parts)
    engine.receive(wire, 1)
    (reply,) = engine.take_packets()
    # Type 2 would be Nak'd, but when anything is rejected only the Reject goes out.
    assert reply.encode() == b"\x04\x33\x00\x0a" + parts[1] + parts[3]


def _nak_replies(engine: ControlProtocol, identifiers: list[int]) -> list[int]:
    codes = []
    for identifier in identifiers:
        engine.receive(
            ConfigureRequest(identifier, (UnknownOption(1, b"a"), UnknownOption(2, b"?"))).encode(), 1
        )
        codes.append(engine.take_packets()[-1].code)
    return codes


def test_nak_after_max_failure_becomes_reject() -> None:
    """A peer that keeps asking (new Identifier: it saw our Nak) the unacceptable: RFC 1661 4.6."""
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES, config=NegotiationConfig(max_failure=2))
    engine.open(0)
    engine.up(0)
    engine.take_packets()
    assert _nak_replies(engine, [1, 2, 3]) == [Code.CONFIGURE_NAK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT]


def test_retransmitted_request_does_not_count_towards_max_failure() -> None:
    """Same Identifier and options again means our Nak was lost; found by the lost-frames property test."""
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES, config=NegotiationConfig(max_failure=2))
    engine.open(0)
    engine.up(0)
    engine.take_packets()
    assert _nak_replies(engine, [7] * 6) == [Code.CONFIGURE_NAK] * 6


def test_retransmission_keeps_the_identifier() -> None:
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES)
    engine.open(0)
    engine.up(0)
    engine.handle_timer(3)
    first, again = engine.take_packets()
    assert isinstance(first, ConfigureRequest)
    assert again == first


def test_ack_must_match_identifier_and_options() -> None:
    engine = ControlProtocol(0xC021, StubPolicy(), codes=LCP_CODES)
    engine.open(0)
    engine.up(0)
    (request,) = engine.take_packets()
    assert isinstance(request, ConfigureRequest)
    engine.receive(ConfigureAck(request.identifier, (UnknownOption(1, b"other"),)).encode(), 1)
    engine.receive(ConfigureAck(request.identifier ^ 1, request.options).encode(), 1)
    engine.receive(ConfigureReject(request.identifier, (UnknownOption(9),)).encode(), 1)
    assert state_of(engine) == State.REQ_SENT
    counters = engine.counters
    assert (counters.ack_mismatch, counters.bad_identifier, counters.reject_not_subset) == (1, 1, 1)
    engine.receive(ConfigureAck(request.identifier, request.options).encode(), 1)
    assert state_of(engine) == State.ACK_RCVD


def test_malformed_reject_from_pppd_is_discarded_and_counted() -> None:
    """pppd's ``04 01 00 05 90`` cannot be framed into options: discarded, the restart timer retries."""
    engine = ControlProtocol(0x8021, StubPolicy(), codes=LCP_CODES)
    engine.open(0)
    engine.up(0)
    (request,) = engine.take_packets()
    engine.receive(bytes((4, request.identifier, 0, 5, 0x90)), 1)
    assert engine.counters.malformed == 1
    assert engine.state == State.REQ_SENT
    engine.handle_timer(3)
    assert [p.code for p in engine.take_packets()] == [Code.CONFIGURE_REQUEST]
