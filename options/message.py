"""The DHCP message (RFC 2131 section 2) as an immutable value, and its wire codec.

A decoded message keeps the bytes it came from (``wire``): RFC 3118 MACs are checked over
what was received, never over a re-encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final, TypeVar

from options.errors import DecodeError, EncodeError
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.rfc2132 import MessageType
from options.rfc3396 import layout_options, scan_field
from options.spec import OptionSpec
from options.wire import ipv4

__all__ = [
    "BOOTP_MIN_SIZE",
    "BOOTREPLY",
    "BOOTREQUEST",
    "DEFAULT_MAX_PAYLOAD",
    "FLAG_BROADCAST",
    "MAGIC_COOKIE",
    "MAX_MESSAGE_SIZE",
    "DhcpMessage",
    "Options",
    "decode_message",
    "encode_message",
    "max_payload_for",
]

T = TypeVar("T")

BOOTREQUEST: Final = 1
BOOTREPLY: Final = 2
FLAG_BROADCAST: Final = 0x8000
MAGIC_COOKIE: Final = b"\x63\x82\x53\x63"

#: Largest UDP payload; anything longer is not a DHCP message.
MAX_MESSAGE_SIZE: Final = 65507
#: RFC 2131: clients must accept 576-octet datagrams, i.e. 548 octets of DHCP payload.
DEFAULT_MAX_PAYLOAD: Final = 576 - 28
#: BOOTP's fixed 300-octet message; many clients and relays expect at least that.
BOOTP_MIN_SIZE: Final = 300

_HEADER: Final = struct.Struct("!BBBBIHHIIII16s64s128s4s")
_FIXED: Final = _HEADER.size  # 240: header and cookie
_FILE: Final = (108, 236)
_SNAME: Final = (44, 108)


class Options(Mapping[int, bytes]):
    """Option payloads by code, in first-seen order, after RFC 3396 concatenation.

    Unknown options are kept byte for byte; typed access goes through a spec:
    ``msg.options.get_value(SUBNET_MASK)``.
    """

    __slots__ = ("_items",)

    _items: dict[int, bytes]

    def __init__(self, items: Iterable[tuple[int, bytes]] | Mapping[int, bytes] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        built: dict[int, bytes] = {}
        for code, payload in pairs:
            if not 1 <= code <= 254:
                raise ValueError(f"option code {code} is outside 1..254")
            if code in built:
                raise ValueError(
                    f"option {code} given twice; give one payload (it is split on the wire as needed)"
                )
            built[code] = bytes(payload)
        self._items = built

    @classmethod
    def _trusted(cls, items: dict[int, bytes]) -> Options:
        obj = cls.__new__(cls)
        obj._items = items
        return obj

    def __getitem__(self, code: int) -> bytes:
        return self._items[code]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Options({self._items!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Options):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def get_value(self, spec: OptionSpec[T]) -> T | None:
        """The decoded value of ``spec``'s option, or None when absent."""
        payload = self._items.get(spec.code)
        return None if payload is None else spec.decode(payload)

    def value(self, spec: OptionSpec[T]) -> T:
        """The decoded value of ``spec``'s option; ``KeyError`` when absent."""
        return spec.decode(self._items[spec.code])

    def with_value(self, spec: OptionSpec[T], value: T) -> Options:
        """A copy with ``spec``'s option set (replacing, or appended at the end)."""
        items = dict(self._items)
        items[spec.code] = spec.encode(value)
        return Options._trusted(items)

    def without(self, *codes: int) -> Options:
        return Options._trusted({c: p for c, p in self._items.items() if c not in codes})

    def items_list(self) -> list[tuple[int, bytes]]:
        return list(self._items.items())


_ZERO: Final = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """One DHCP message; field names are RFC 2131's.

    ``chaddr``, ``sname`` and ``file`` hold the raw field bytes (zero padding removed on
    request by the accessors; all zeros where option 52 overloaded them); ``wire`` is the
    exact payload a decoded message came from, empty for messages built locally.
    """

    op: int
    xid: int = 0
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    chaddr: bytes = b""
    sname: bytes = b""
    file: bytes = b""
    options: Options = field(default_factory=Options)
    wire: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("op", "htype", "hlen", "hops"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} {getattr(self, name)} is not an octet")
        if not 0 <= self.xid <= 0xFFFFFFFF:
            raise ValueError(f"xid {self.xid} is not 32 bits")
        for name in ("secs", "flags"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"{name} {getattr(self, name)} is not 16 bits")
        for name, size in (("chaddr", 16), ("sname", 64), ("file", 128)):
            if len(getattr(self, name)) > size:
                raise ValueError(f"{name} is longer than its {size}-octet field")
        if not isinstance(self.options, Options):
            raise TypeError("options must be an Options value")

    @property
    def message_type(self) -> MessageType | None:
        """Option 53, or None for a plain BOOTP message."""
        payload = self.options.get(53)
        if payload is None:
            return None
        return MessageType(payload[0])

    @property
    def hardware_address(self) -> bytes:
        """The significant ``hlen`` octets of ``chaddr``."""
        return self.chaddr[: min(self.hlen, 16)].ljust(min(self.hlen, 16), b"\0")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)


_new_message = object.__new__
_set = object.__setattr__


def decode_message(data: bytes, registry: OptionRegistry | None = None) -> DhcpMessage:
    """Decode one DHCP message (a UDP payload).

    Raises :class:`DecodeError`, and nothing else, for any input that is not a well-formed
    DHCP message: short or oversized input, a missing magic cookie, an option running past
    its field, a bad option 52, or a known option whose value breaks its RFC's rules.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size < _FIXED:
        raise DecodeError(f"message of {size} bytes is shorter than the 240-byte fixed part", size)
    if size > MAX_MESSAGE_SIZE:
        raise DecodeError(f"message of {size} bytes exceeds the largest UDP payload", MAX_MESSAGE_SIZE)
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file, cookie) = (
        _HEADER.unpack_from(data)
    )
    if cookie != MAGIC_COOKIE:
        raise DecodeError("missing DHCP magic cookie 99.130.83.99", 236)

    spans: list[tuple[int, int, int]] = []
    budget = scan_field(data, _FIXED, size, spans)
    overload = 0
    for code, start, end in spans:
        if code == 52:
            if end - start != 1 or not 1 <= data[start] <= 3:
                raise DecodeError("option_overload: value is not 1, 2 or 3", start)
            overload = data[start]
    if overload & 1:
        budget = scan_field(data, *_FILE, spans, budget)
    if overload & 2:
        scan_field(data, *_SNAME, spans, budget)

    items: dict[int, bytes] = {}
    split: dict[int, int] | None = None
    for code, start, end in spans:
        if code in items:
            # RFC 3396: several instances of one code are one option.
            items[code] += data[start:end]
            if split is None:
                split = {}
            split.setdefault(code, start)
        else:
            items[code] = data[start:end]

    validators = (registry or DEFAULT_REGISTRY).validators()
    for code, payload in items.items():
        check = validators.get(code)
        if check is not None:
            try:
                check(payload)
            except DecodeError as exc:
                raise DecodeError(exc.reason, _packet_offset(spans, code, exc.offset)) from None
    if overload:
        # The overloaded fields hold options, not names, and option 52 is the encoder's to
        # choose: dropping both lets a decoded message be re-encoded to the same bytes.
        del items[52]
        file = bytes(128) if overload & 1 else file
        sname = bytes(64) if overload & 2 else sname

    msg: DhcpMessage = _new_message(DhcpMessage)
    _set(msg, "op", op)
    _set(msg, "xid", xid)
    _set(msg, "htype", htype)
    _set(msg, "hlen", hlen)
    _set(msg, "hops", hops)
    _set(msg, "secs", secs)
    _set(msg, "flags", flags)
    _set(msg, "ciaddr", ipv4(ci))
    _set(msg, "yiaddr", ipv4(yi))
    _set(msg, "siaddr", ipv4(si))
    _set(msg, "giaddr", ipv4(gi))
    _set(msg, "chaddr", chaddr)
    _set(msg, "sname", sname)
    _set(msg, "file", file)
    _set(msg, "options", Options._trusted(items))
    _set(msg, "wire", data)
    return msg


def _packet_offset(spans: list[tuple[int, int, int]], code: int, offset: int) -> int:
    """Where byte ``offset`` of ``code``'s concatenated payload lies in the packet."""
    last = 0
    for c, start, end in spans:
        if c == code:
            if offset < end - start:
                return start + offset
            offset -= end - start
            last = end
    return last


def encode_message(
    msg: DhcpMessage, *, max_payload: int = DEFAULT_MAX_PAYLOAD, pad_to: int = BOOTP_MIN_SIZE
) -> bytes:
    """Encode ``msg`` into at most ``max_payload`` bytes.

    Options are split (RFC 3396) and placed in ``file``/``sname`` (option 52) when the
    options field is full and those fields are empty. Raises :class:`EncodeError` when the
    message cannot fit; otherwise never fails for a valid message. ``max_payload`` is the
    DHCP payload size: a peer's option 57 minus 28 octets of IP and UDP headers.
    """
    if 52 in msg.options:
        raise EncodeError("option 52 is chosen by the encoder; do not set it")
    max_payload = min(max_payload, MAX_MESSAGE_SIZE)
    if max_payload < _FIXED + 1:
        raise EncodeError(f"max_payload {max_payload} leaves no room for options")
    file_free = not msg.file.strip(b"\0")
    sname_free = not msg.sname.strip(b"\0")
    layout = layout_options(msg.options.items_list(), max_payload - _FIXED, file_free, sname_free)
    header = _HEADER.pack(
        msg.op,
        msg.htype,
        msg.hlen,
        msg.hops,
        msg.xid,
        msg.secs,
        msg.flags,
        int(msg.ciaddr),
        int(msg.yiaddr),
        int(msg.siaddr),
        int(msg.giaddr),
        msg.chaddr,
        layout.sname if layout.sname is not None else msg.sname,
        layout.file if layout.file is not None else msg.file,
        MAGIC_COOKIE,
    )
    out = header + layout.options
    if len(out) < pad_to:
        out += bytes(min(pad_to, max_payload) - len(out))
    return out


def max_payload_for(request: DhcpMessage) -> int:
    """The reply size a client accepts: its option 57 less IP/UDP headers, else 548 (RFC 2131)."""
    payload = request.options.get(57)
    if payload is None or len(payload) != 2:
        return DEFAULT_MAX_PAYLOAD
    return max(DEFAULT_MAX_PAYLOAD, int.from_bytes(payload, "big") - 28)
