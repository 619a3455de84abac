"""Option specifications: how one option's value travels as bytes.

An :class:`OptionSpec` is a typed two-way mapping between an option's payload (after
RFC 3396 concatenation) and a Python value. ``validate`` is the cheap structural check
the decoder runs eagerly on every known option, so a message that decodes is well
formed throughout; ``decode`` then builds the value on demand and cannot fail on a
payload that validated. That split keeps decoding fast for messages carrying long
address lists that a receiver may never look at.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any, Final, Generic, TypeVar

from options.errors import DecodeError
from options.wire import ipv4, ipv4_tuple, pack_ipv4s

__all__ = [
    "AddressListSpec",
    "AddressPairListSpec",
    "AddressSpec",
    "BytesSpec",
    "EnumSpec",
    "FlagSpec",
    "IntListSpec",
    "IntSpec",
    "OptionSpec",
    "TextSpec",
    "jsonable",
]

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)


class OptionSpec(ABC, Generic[T]):
    """One option code, its name, and its value codec.

    Offsets in errors raised by ``validate`` and ``decode`` are relative to the start of
    the payload; the message decoder re-anchors them to the packet.
    """

    __slots__ = ("code", "length_rule", "name")

    def __init__(self, code: int, name: str) -> None:
        if not 1 <= code <= 254:
            raise ValueError(f"option code {code} is outside 1..254 (0 and 255 are PAD and END)")
        self.code = code
        self.name = name
        #: ``(minimum, maximum, multiple)`` when the payload length alone decides validity:
        #: the decoder checks that inline instead of calling ``validate`` (most options).
        self.length_rule: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} {self.name}>"

    @abstractmethod
    def validate(self, data: bytes) -> None:
        """Raise :class:`DecodeError` unless ``data`` is a well-formed payload."""

    @abstractmethod
    def decode(self, data: bytes) -> T:
        """The value of a payload; raises :class:`DecodeError` if it is malformed."""

    @abstractmethod
    def encode(self, value: T) -> bytes:
        """The payload of a value; raises ``ValueError``/``TypeError`` only for values of the wrong type."""

    def item(self, value: T) -> tuple[int, bytes]:
        """A ``(code, payload)`` pair ready for :class:`options.Options`."""
        return (self.code, self.encode(value))

    def to_json(self, value: T) -> Any:
        """A JSON-ready rendering: addresses as dotted strings, integers as numbers, bytes as hex."""
        return jsonable(value)


def jsonable(value: object) -> Any:
    """Render codec values for JSON output (``ce-autoconf decode --json``)."""
    if isinstance(value, bool | int | str) or value is None:
        return int(value) if isinstance(value, IntEnum) else value
    if isinstance(value, IPv4Address):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    slots = getattr(type(value), "__slots__", None)
    if slots is not None:
        return {name: jsonable(getattr(value, name)) for name in slots}
    raise TypeError(f"no JSON rendering for {type(value).__name__}")


#: No upper bound on a payload's length but the message's own.
UNBOUNDED: Final = 1 << 31


def _length_error(name: str, size: int, rule: str) -> DecodeError:
    return DecodeError(f"{name}: length {size} {rule}", 0)


class AddressSpec(OptionSpec[IPv4Address]):
    """Exactly one IPv4 address (subnet mask, server identifier, requested address, ...)."""

    __slots__ = ()

    def __init__(self, code: int, name: str) -> None:
        super().__init__(code, name)
        self.length_rule = (4, 4, 1)

    def validate(self, data: bytes) -> None:
        if len(data) != 4:
            raise _length_error(self.name, len(data), "is not 4")

    def decode(self, data: bytes) -> IPv4Address:
        self.validate(data)
        return ipv4(int.from_bytes(data, "big"))

    def encode(self, value: IPv4Address) -> bytes:
        return value.packed


class AddressListSpec(OptionSpec[tuple[IPv4Address, ...]]):
    """A list of IPv4 addresses: RFC 2132's "minimum length ... 4, multiple of 4" options."""

    __slots__ = ("min_count",)

    def __init__(self, code: int, name: str, min_count: int = 1) -> None:
        super().__init__(code, name)
        self.min_count = min_count
        self.length_rule = (4 * min_count, UNBOUNDED, 4)

    def validate(self, data: bytes) -> None:
        size = len(data)
        if size % 4 or size < 4 * self.min_count:
            raise _length_error(self.name, size, f"is not a multiple of 4 of at least {4 * self.min_count}")

    def decode(self, data: bytes) -> tuple[IPv4Address, ...]:
        self.validate(data)
        return ipv4_tuple(data)

    def encode(self, value: tuple[IPv4Address, ...]) -> bytes:
        if len(value) < self.min_count:
            raise ValueError(f"{self.name} needs at least {self.min_count} addresses")
        return pack_ipv4s(value)


class AddressPairListSpec(OptionSpec[tuple[tuple[IPv4Address, IPv4Address], ...]]):
    """Pairs of addresses (policy filter, static routes): multiples of 8."""

    __slots__ = ()

    def __init__(self, code: int, name: str) -> None:
        super().__init__(code, name)
        self.length_rule = (8, UNBOUNDED, 8)

    def validate(self, data: bytes) -> None:
        if not data or len(data) % 8:
            raise _length_error(self.name, len(data), "is not a non-zero multiple of 8")

    def decode(self, data: bytes) -> tuple[tuple[IPv4Address, IPv4Address], ...]:
        self.validate(data)
        flat = ipv4_tuple(data)
        return tuple(zip(flat[0::2], flat[1::2], strict=True))

    def encode(self, value: tuple[tuple[IPv4Address, IPv4Address], ...]) -> bytes:
        if not value:
            raise ValueError(f"{self.name} needs at least one pair")
        return b"".join(a.packed + b.packed for a, b in value)


_INT_FORMATS: Final = {(1, False): "!B", (2, False): "!H", (4, False): "!I", (4, True): "!i"}


class IntSpec(OptionSpec[int]):
    """A fixed-size integer, with the RFC's minimum where it sets one (MTU >= 68, sizes >= 576)."""

    __slots__ = ("_struct", "maximum", "minimum", "size")

    def __init__(
        self, code: int, name: str, size: int, *, signed: bool = False, minimum: int | None = None
    ) -> None:
        super().__init__(code, name)
        self.size = size
        self._struct = struct.Struct(_INT_FORMATS[(size, signed)])
        bits = 8 * size
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        self.minimum = low if minimum is None else minimum
        self.maximum = high
        if minimum is None:
            self.length_rule = (size, size, 1)

    def validate(self, data: bytes) -> None:
        if len(data) != self.size:
            raise _length_error(self.name, len(data), f"is not {self.size}")
        if self.minimum > 0 and int.from_bytes(data, "big") < self.minimum:
            raise DecodeError(f"{self.name}: value below the minimum {self.minimum}", 0)

    def decode(self, data: bytes) -> int:
        self.validate(data)
        return int(self._struct.unpack(data)[0])

    def encode(self, value: int) -> bytes:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{self.name}: {value} outside {self.minimum}..{self.maximum}")
        return self._struct.pack(value)


class IntListSpec(OptionSpec[tuple[int, ...]]):
    """A list of 8- or 16-bit integers (parameter request list, MTU plateau table)."""

    __slots__ = ("_fmt", "min_count", "size")

    def __init__(self, code: int, name: str, size: int, min_count: int = 1) -> None:
        super().__init__(code, name)
        self.size = size
        self.min_count = min_count
        self._fmt = "B" if size == 1 else "H"
        self.length_rule = (size * min_count, UNBOUNDED, size)

    def validate(self, data: bytes) -> None:
        size = len(data)
        if size % self.size or size < self.size * self.min_count:
            raise _length_error(
                self.name, size, f"is not a multiple of {self.size} of at least {self.min_count}"
            )

    def decode(self, data: bytes) -> tuple[int, ...]:
        self.validate(data)
        if self.size == 1:
            return tuple(data)
        return struct.unpack(f"!{len(data) // 2}H", data)

    def encode(self, value: tuple[int, ...]) -> bytes:
        if len(value) < self.min_count:
            raise ValueError(f"{self.name} needs at least {self.min_count} values")
        return struct.pack(f"!{len(value)}{self._fmt}", *value)


class FlagSpec(OptionSpec[bool]):
    """RFC 2132 boolean options: one octet, 0 or 1 and nothing else."""

    __slots__ = ()

    def validate(self, data: bytes) -> None:
        if len(data) != 1:
            raise _length_error(self.name, len(data), "is not 1")
        if data[0] > 1:
            raise DecodeError(f"{self.name}: flag value {data[0]} is neither 0 nor 1", 0)

    def decode(self, data: bytes) -> bool:
        self.validate(data)
        return data[0] == 1

    def encode(self, value: bool) -> bytes:
        return b"\x01" if value else b"\x00"


class TextSpec(OptionSpec[str]):
    """NVT ASCII text (host name, domain name, message).

    Bytes that are not UTF-8 survive as surrogate escapes so a decoded value always
    re-encodes to the exact bytes received.
    """

    __slots__ = ("min_length",)

    def __init__(self, code: int, name: str, min_length: int = 1) -> None:
        super().__init__(code, name)
        self.min_length = min_length
        self.length_rule = (min_length, UNBOUNDED, 1)

    def validate(self, data: bytes) -> None:
        if len(data) < self.min_length:
            raise _length_error(self.name, len(data), f"is below the minimum {self.min_length}")

    def decode(self, data: bytes) -> str:
        self.validate(data)
        return data.decode("utf-8", "surrogateescape")

    def encode(self, value: str) -> bytes:
        data = value.encode("utf-8", "surrogateescape")
        if len(data) < self.min_length:
            raise ValueError(f"{self.name} must be at least {self.min_length} bytes")
        return data


class BytesSpec(OptionSpec[bytes]):
    """Opaque octets (vendor-specific information, vendor class identifier)."""

    __slots__ = ("min_length",)

    def __init__(self, code: int, name: str, min_length: int = 1) -> None:
        super().__init__(code, name)
        self.min_length = min_length
        self.length_rule = (min_length, UNBOUNDED, 1)

    def validate(self, data: bytes) -> None:
        if len(data) < self.min_length:
            raise _length_error(self.name, len(data), f"is below the minimum {self.min_length}")

    def decode(self, data: bytes) -> bytes:
        self.validate(data)
        return bytes(data)

    def encode(self, value: bytes) -> bytes:
        if len(value) < self.min_length:
            raise ValueError(f"{self.name} must be at least {self.min_length} bytes")
        return bytes(value)


class EnumSpec(OptionSpec[E]):
    """One octet drawn from an enumeration; values outside it are malformed."""

    __slots__ = ("_enum", "_members")

    def __init__(self, code: int, name: str, enum: type[E]) -> None:
        super().__init__(code, name)
        self._enum = enum
        self._members: dict[int, E] = {int(m): m for m in enum}

    def validate(self, data: bytes) -> None:
        if len(data) == 1 and data[0] in self._members:
            return
        if len(data) != 1:
            raise _length_error(self.name, len(data), "is not 1")
        raise DecodeError(f"{self.name}: unknown value {data[0]}", 0)

    def decode(self, data: bytes) -> E:
        self.validate(data)
        return self._members[data[0]]

    def encode(self, value: E) -> bytes:
        return bytes((int(value),))

    def to_json(self, value: E) -> Any:
        return int(value)


class StructuredSpec(OptionSpec[T]):
    """A spec whose structural check is its full decode: for small composite options."""

    __slots__ = ("_decode", "_encode")

    def __init__(
        self, code: int, name: str, decode: Callable[[bytes], T], encode: Callable[[T], bytes]
    ) -> None:
        super().__init__(code, name)
        self._decode = decode
        self._encode = encode

    def validate(self, data: bytes) -> None:
        self._decode(data)

    def decode(self, data: bytes) -> T:
        return self._decode(data)

    def encode(self, value: T) -> bytes:
        return self._encode(value)
