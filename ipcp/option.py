"""Configuration Option framing shared by LCP and every NCP (RFC 1661 section 6).

An option is ``Type(1) Length(1) Data(Length-2)``. Framing errors (a length below 2, an option
running past its packet) raise :class:`DecodeError`; the data of a known type is decoded by the
function a :class:`OptionRegistry` holds for it, and a type nobody registered is kept byte-exact
as :class:`UnknownOption` so it re-encodes identically (and can be copied into a Configure-Reject).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from options.errors import DecodeError
from options.wire import Reader

__all__ = [
    "MAX_OPTIONS_PER_PACKET",
    "MAX_OPTION_DATA",
    "Option",
    "OptionDecoder",
    "OptionRegistry",
    "RawOption",
    "UnknownOption",
    "encode_options",
    "split_options",
]

MAX_OPTION_DATA: Final = 253
"""The Length octet counts type and length too, so data is at most 255 - 2 octets."""

MAX_OPTIONS_PER_PACKET: Final = 64
"""A bound on work per packet; a 1500-octet request full of 2-octet options would hold 750."""


class Option(abc.ABC):
    """One Configuration Option value. Subclasses are frozen slotted dataclasses."""

    __slots__ = ()

    @property
    @abc.abstractmethod
    def type_code(self) -> int:
        """The Type octet."""

    @abc.abstractmethod
    def encode_data(self) -> bytes:
        """The Data field (everything after the Length octet)."""

    def encode(self) -> bytes:
        """Type, Length and Data; cannot fail for a value that passed construction."""
        data = self.encode_data()
        return bytes((self.type_code, len(data) + 2)) + data


def _check_u8(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} is not an octet")


@dataclass(frozen=True, slots=True)
class UnknownOption(Option):
    """An option whose type has no registered decoder: kept byte for byte."""

    option_type: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_u8(self.option_type, "option type")
        if len(self.data) > MAX_OPTION_DATA:
            raise ValueError(f"option data of {len(self.data)} octets exceeds {MAX_OPTION_DATA}")

    @property
    def type_code(self) -> int:
        return self.option_type

    def encode_data(self) -> bytes:
        return self.data


class RawOption(NamedTuple):
    """An option as framed on the wire: where it starts, its type, its data. ``raw`` is the wire image."""

    offset: int
    option_type: int
    data: bytes
    raw: bytes


OptionDecoder = Callable[[int, Reader], Option]
"""Decodes one option's data from a reader windowed on exactly that data; gets the type too."""


def split_options(buf: bytes, start: int = 0, end: int | None = None) -> list[RawOption]:
    """Frame ``buf[start:end]`` into options without interpreting their data.

    RFC 1661 section 6: "If a negotiable option is received in a Configure-Request, but with an
    invalid or unrecognized Length, a Configure-Nak or Configure-Reject MUST be transmitted" --
    which needs the framing to hold; when it does not (length < 2, or past the end) nothing after
    that point can be delimited, so the whole packet is malformed.
    """
    stop = len(buf) if end is None else end
    reader = Reader(buf, start, stop)
    found: list[RawOption] = []
    while not reader.at_end():
        at = reader.offset
        if len(found) >= MAX_OPTIONS_PER_PACKET:
            raise DecodeError(f"more than {MAX_OPTIONS_PER_PACKET} options in one packet", at)
        option_type = reader.pull_u8("option type")
        length = reader.pull_u8(f"length of option {option_type}")
        if length < 2:
            raise DecodeError(f"option {option_type} has length {length}, below the minimum of 2", at + 1)
        data = reader.pull_bytes(length - 2, f"data of option {option_type} (length {length})")
        found.append(RawOption(at, option_type, data, buf[at : at + length]))
    return found


class OptionRegistry:
    """Type -> decoder for one protocol (LCP, IPCP, ...). Instantiable so tests and users can extend one."""

    __slots__ = ("_decoders", "name")

    def __init__(self, name: str, decoders: dict[int, OptionDecoder] | None = None) -> None:
        self.name = name
        self._decoders: dict[int, OptionDecoder] = dict(decoders or {})

    def register(self, option_type: int, decoder: OptionDecoder) -> None:
        """Make ``decoder`` responsible for ``option_type``; replaces an earlier registration."""
        _check_u8(option_type, "option type")
        self._decoders[option_type] = decoder

    def copy(self, name: str | None = None) -> OptionRegistry:
        return OptionRegistry(name or self.name, self._decoders)

    def __contains__(self, option_type: int) -> bool:
        return option_type in self._decoders

    def decode_raw(self, buf: bytes, raw: RawOption) -> Option:
        """Decode one framed option; a bad Data field raises DecodeError at its absolute offset."""
        decoder = self._decoders.get(raw.option_type)
        if decoder is None:
            return UnknownOption(raw.option_type, raw.data)
        data_start = raw.offset + 2
        reader = Reader(buf, data_start, data_start + len(raw.data))
        option = decoder(raw.option_type, reader)
        reader.expect_end(f"option {raw.option_type}")
        return option

    def decode(self, buf: bytes, start: int = 0, end: int | None = None) -> tuple[Option, ...]:
        """Every option of ``buf[start:end]``, strictly: any malformed option raises DecodeError."""
        return tuple(self.decode_raw(buf, raw) for raw in split_options(buf, start, end))

    def decode_each(self, buf: bytes, start: int = 0, end: int | None = None) -> Iterator[Option | RawOption]:
        """Each option decoded, or its :class:`RawOption` where its data is malformed.

        An engine answering a Configure-Request uses this to reject just the malformed options
        unchanged (what RFC 1661 asks for an invalid Length) instead of dropping the packet.
        """
        for raw in split_options(buf, start, end):
            try:
                yield self.decode_raw(buf, raw)
            except DecodeError:
                yield raw


def encode_options(options: Iterable[Option]) -> bytes:
    """The Options field of a Configure packet, in the order given."""
    return b"".join(option.encode() for option in options)
