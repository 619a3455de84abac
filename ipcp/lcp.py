"""The LCP option policy: MRU, ACCM, Magic-Number, PFC and ACFC (RFC 1661 section 6, RFC 1662 section 7).

Authentication and Quality protocols are rejected: this link runs over a line we own (a pty or
serial port to the NAS); authentication, if a NAS demands it, is future work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ipcp.engine import ACK, REJECT, Received, Verdict, VerdictKind
from ipcp.events import PppEvent
from ipcp.hdlc import ACCM_ALL
from ipcp.lcp_options import (
    DEFAULT_MRU,
    LCP_OPTIONS,
    AddressControlFieldCompression,
    AsyncControlCharacterMap,
    MagicNumber,
    MaximumReceiveUnit,
    ProtocolFieldCompression,
)
from ipcp.option import Option, OptionRegistry, RawOption

__all__ = ["MIN_MRU", "LcpConfig", "LcpPolicy", "LinkParameters"]

MIN_MRU = 128
"""The smallest MRU we agree to send to (pppd's MINMRU); a smaller request is Nak'd with this."""


@dataclass(frozen=True, slots=True)
class LcpConfig:
    """What we ask for: our MRU (asked only if not 1500), the ACCM we want, header compression."""

    mru: int = DEFAULT_MRU
    accm: int = 0
    magic_number: bool = True
    pfc: bool = True
    acfc: bool = True

    def __post_init__(self) -> None:
        if not MIN_MRU <= self.mru <= 0xFFFF:
            raise ValueError(f"MRU {self.mru} outside {MIN_MRU}..65535")
        if not 0 <= self.accm <= ACCM_ALL:
            raise ValueError(f"ACCM {self.accm:#x} does not fit 32 bits")


@dataclass(frozen=True, slots=True)
class LinkParameters:
    """What LCP settled, for framing: how to send to the peer and what to expect from it."""

    transmit_accm: int = ACCM_ALL
    receive_accm: int = ACCM_ALL
    peer_mru: int = DEFAULT_MRU
    mru: int = DEFAULT_MRU
    transmit_pfc: bool = False
    transmit_acfc: bool = False
    magic: int = 0
    peer_magic: int = 0


class LcpPolicy:
    """Negotiates the link. ``random32`` supplies Magic-Numbers (randomness is passed in)."""

    def __init__(self, config: LcpConfig | None = None, *, random32: Callable[[], int]) -> None:
        self.config = config or LcpConfig()
        self._random32 = random32
        self.loopback_suspected = 0
        self._magic = self._new_magic()
        self._want_mru = self.config.mru
        self._want_accm: int | None = self.config.accm
        self._want_magic = self.config.magic_number
        self._want_pfc = self.config.pfc
        self._want_acfc = self.config.acfc
        self._want_mru_option = self.config.mru != DEFAULT_MRU
        self._ours: dict[type[Option], Option] = {}
        self._peers: dict[type[Option], Option] = {}
        self.parameters = LinkParameters()

    @property
    def registry(self) -> OptionRegistry:
        return LCP_OPTIONS

    @property
    def magic(self) -> int:
        """Our Magic-Number (0 if not negotiating one)."""
        return self._magic if self._want_magic else 0

    def _new_magic(self) -> int:
        value = 0
        while value == 0:  # RFC 1661 6.4: zero is illegal
            value = self._random32() & 0xFFFFFFFF
        return value

    def request_options(self) -> tuple[Option, ...]:
        options: list[Option] = []
        if self._want_mru_option:
            options.append(MaximumReceiveUnit(self._want_mru))
        if self._want_accm is not None:
            options.append(AsyncControlCharacterMap(self._want_accm))
        if self._want_magic:
            options.append(MagicNumber(self._magic))
        if self._want_pfc:
            options.append(ProtocolFieldCompression())
        if self._want_acfc:
            options.append(AddressControlFieldCompression())
        return tuple(options)

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        return [self._review_one(o) for o in options]

    def nak_additions(self, options: Sequence[Received]) -> tuple[Option, ...]:
        return ()

    def link_down(self) -> None:
        pass

    def _review_one(self, option: Received) -> Verdict:
        if isinstance(option, MaximumReceiveUnit):
            if option.mru < MIN_MRU:
                return Verdict(VerdictKind.NAK, (MaximumReceiveUnit(MIN_MRU),))
            return ACK
        if isinstance(option, AsyncControlCharacterMap | ProtocolFieldCompression):
            return ACK
        if isinstance(option, AddressControlFieldCompression):
            return ACK
        if isinstance(option, MagicNumber):
            if option.magic == 0:
                return Verdict(VerdictKind.NAK, (MagicNumber(self._new_magic()),))
            if self._want_magic and option.magic == self._magic:
                # RFC 1661 6.4: our own number came back -- probably a looped-back line. Nak with a
                # different value, and pick a new one of our own for the next request.
                self.loopback_suspected += 1
                self._magic = self._new_magic()
                return Verdict(VerdictKind.NAK, (MagicNumber(self._new_magic()),))
            return ACK
        return REJECT  # Authentication/Quality protocols, FCS alternatives, unknown, malformed

    def peer_acked(self, options: Sequence[Option]) -> None:
        self._peers = {type(o): o for o in options}

    def our_acked(self, options: Sequence[Option]) -> None:
        self._ours = {type(o): o for o in options}

    def our_naked(self, options: Sequence[Received]) -> None:
        for option in options:
            if isinstance(option, MaximumReceiveUnit) and option.mru >= MIN_MRU:
                self._want_mru = option.mru
                self._want_mru_option = True
            elif isinstance(option, AsyncControlCharacterMap):
                # RFC 1662 7.1: escaping more than asked is always safe; take the union.
                self._want_accm = (self._want_accm or 0) | option.accm
            elif isinstance(option, MagicNumber):
                self._magic = self._new_magic()

    def our_rejected(self, options: Sequence[RawOption]) -> None:
        for raw in options:
            if raw.option_type == MaximumReceiveUnit.TYPE:
                self._want_mru_option = False
                self._want_mru = DEFAULT_MRU
            elif raw.option_type == AsyncControlCharacterMap.TYPE:
                self._want_accm = None
            elif raw.option_type == MagicNumber.TYPE:
                self._want_magic = False
            elif raw.option_type == ProtocolFieldCompression.TYPE:
                self._want_pfc = False
            elif raw.option_type == AddressControlFieldCompression.TYPE:
                self._want_acfc = False

    def layer_up(self) -> list[PppEvent]:
        peer_mru = self._peers.get(MaximumReceiveUnit)
        peer_accm = self._peers.get(AsyncControlCharacterMap)
        our_accm = self._ours.get(AsyncControlCharacterMap)
        our_mru = self._ours.get(MaximumReceiveUnit)
        peer_magic = self._peers.get(MagicNumber)
        self.parameters = LinkParameters(
            transmit_accm=peer_accm.accm if isinstance(peer_accm, AsyncControlCharacterMap) else ACCM_ALL,
            receive_accm=our_accm.accm if isinstance(our_accm, AsyncControlCharacterMap) else ACCM_ALL,
            peer_mru=peer_mru.mru if isinstance(peer_mru, MaximumReceiveUnit) else DEFAULT_MRU,
            mru=our_mru.mru if isinstance(our_mru, MaximumReceiveUnit) else DEFAULT_MRU,
            transmit_pfc=ProtocolFieldCompression in self._peers,
            transmit_acfc=AddressControlFieldCompression in self._peers,
            magic=self.magic if MagicNumber in self._ours else 0,
            peer_magic=peer_magic.magic if isinstance(peer_magic, MagicNumber) else 0,
        )
        return []

    def layer_down(self) -> list[PppEvent]:
        self.parameters = LinkParameters()
        return []
