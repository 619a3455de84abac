"""The option negotiation automaton of RFC 1661 section 4, as a transition table.

The table below is RFC 1661 section 4.1 cell for cell: ``actions/next-state``, ``-`` for an illegal
transition. It is data, parsed once; :func:`transition` looks a cell up and nothing else decides
what happens -- the engine (:mod:`ipcp.engine`) only executes the actions.

Footnotes: ``p`` (passive option, TO- in Req-Sent/Ack-Rcvd/Ack-Sent) and ``x`` (crossed connection)
need no extra behaviour; ``r`` (restart option: Open in Stopped/Closing/Stopping/Opened) is not
taken -- the state is kept, which the RFC allows. Renegotiation uses Down then Up instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final

__all__ = ["TABLE", "Action", "Event", "IllegalTransitionError", "State", "transition"]


class State(IntEnum):
    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(Enum):
    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


class Action(Enum):
    TLU = "tlu"  # This-Layer-Up
    TLD = "tld"  # This-Layer-Down
    TLS = "tls"  # This-Layer-Started
    TLF = "tlf"  # This-Layer-Finished
    IRC = "irc"  # Initialize-Restart-Count
    ZRC = "zrc"  # Zero-Restart-Count
    SCR = "scr"  # Send-Configure-Request
    SCA = "sca"  # Send-Configure-Ack
    SCN = "scn"  # Send-Configure-Nak/Rej
    STR = "str"  # Send-Terminate-Request
    STA = "sta"  # Send-Terminate-Ack
    SCJ = "scj"  # Send-Code-Reject
    SER = "ser"  # Send-Echo-Reply


class IllegalTransitionError(RuntimeError):
    """The caller fed an event the table marks ``-`` (e.g. Up twice): a local programming error."""


#        0 Initial  1 Starting  2 Closed  3 Stopped       4 Closing  5 Stopping
#        6 Req-Sent 7 Ack-Rcvd  8 Ack-Sent 9 Opened
_RFC1661_TABLE: Final = {
    "Up": ["2", "irc,scr/6", "-", "-", "-", "-", "-", "-", "-", "-"],
    "Down": ["-", "-", "0", "tls/1", "0", "1", "1", "1", "1", "tld/1"],
    "Open": ["tls/1", "1", "irc,scr/6", "3r", "5r", "5r", "6", "7", "8", "9r"],
    "Close": ["0", "tlf/0", "2", "2", "4", "4", "irc,str/4", "irc,str/4", "irc,str/4", "tld,irc,str/4"],
    "TO+": ["-", "-", "-", "-", "str/4", "str/5", "scr/6", "scr/6", "scr/8", "-"],
    "TO-": ["-", "-", "-", "-", "tlf/2", "tlf/3", "tlf/3p", "tlf/3p", "tlf/3p", "-"],
    "RCR+": ["-", "-", "sta/2", "irc,scr,sca/8", "4", "5", "sca/8", "sca,tlu/9", "sca/8", "tld,scr,sca/8"],
    "RCR-": ["-", "-", "sta/2", "irc,scr,scn/6", "4", "5", "scn/6", "scn/7", "scn/6", "tld,scr,scn/6"],
    "RCA": ["-", "-", "sta/2", "sta/3", "4", "5", "irc/7", "scr/6x", "irc,tlu/9", "tld,scr/6x"],
    "RCN": ["-", "-", "sta/2", "sta/3", "4", "5", "irc,scr/6", "scr/6x", "irc,scr/8", "tld,scr/6x"],
    "RTR": ["-", "-", "sta/2", "sta/3", "sta/4", "sta/5", "sta/6", "sta/6", "sta/6", "tld,zrc,sta/5"],
    "RTA": ["-", "-", "2", "3", "tlf/2", "tlf/3", "6", "6", "8", "tld,scr/6"],
    "RUC": ["-", "-", "scj/2", "scj/3", "scj/4", "scj/5", "scj/6", "scj/7", "scj/8", "scj/9"],
    "RXJ+": ["-", "-", "2", "3", "4", "5", "6", "6", "8", "9"],
    "RXJ-": ["-", "-", "tlf/2", "tlf/3", "tlf/2", "tlf/3", "tlf/3", "tlf/3", "tlf/3", "tld,irc,str/5"],
    "RXR": ["-", "-", "2", "3", "4", "5", "6", "7", "8", "ser/9"],
}


def _parse_cell(cell: str) -> tuple[tuple[Action, ...], State] | None:
    if cell == "-":
        return None
    actions_text, _, target = cell.rpartition("/")
    actions = tuple(Action(a) for a in actions_text.split(",")) if actions_text else ()
    return actions, State(int(target.rstrip("prx")))


def _build() -> Mapping[tuple[State, Event], tuple[tuple[Action, ...], State]]:
    table: dict[tuple[State, Event], tuple[tuple[Action, ...], State]] = {}
    for event_name, cells in _RFC1661_TABLE.items():
        for state, cell in zip(State, cells, strict=True):
            parsed = _parse_cell(cell)
            if parsed is not None:
                table[state, Event(event_name)] = parsed
    return MappingProxyType(table)


TABLE: Final = _build()
"""(state, event) -> (actions in order, next state); absent keys are the RFC's ``-``."""


def transition(state: State, event: Event) -> tuple[tuple[Action, ...], State]:
    """The RFC 1661 cell for ``state`` x ``event``; raises IllegalTransitionError for ``-``."""
    try:
        return TABLE[state, event]
    except KeyError:
        raise IllegalTransitionError(f"event {event.value} is illegal in state {state.name}") from None
