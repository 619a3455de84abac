"""The DHCP message (RFC 2131 section 2) as an immutable value, and its wire codec.

A decoded message keeps the bytes it came from (``wire``): RFC 3118 MACs are checked over
what was received, never over a re-encoding.
"""

from __future__ import annotations

import struct
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from ipaddress import IPv4Address
from typing import Final, TypeVar

from options.errors import DecodeError, EncodeError
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.rfc2132 import MessageType
from options.rfc3396 import collect_field, layout_options, scan_field
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
    "validate_options",
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
_EMPTY_FILE: Final = bytes(128)
_EMPTY_SNAME: Final = bytes(64)
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

    # The Mapping mixins go through __getitem__ one key at a time; the dict's own views
    # are several times faster, and servers call these on every message.
    def __contains__(self, code: object) -> bool:
        return code in self._items

    def get(self, code: int, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self._items.get(code, default)

    def keys(self) -> KeysView[int]:
        return self._items.keys()

    def items(self) -> ItemsView[int, bytes]:
        return self._items.items()

    def values(self) -> ValuesView[bytes]:
        return self._items.values()

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
        return self.with_payload(spec.code, spec.encode(value))

    def with_payload(self, code: int, payload: bytes) -> Options:
        """A copy with option ``code`` set to an already encoded payload."""
        if not 1 <= code <= 254:
            raise ValueError(f"option code {code} is outside 1..254")
        items = dict(self._items)
        items[code] = bytes(payload)
        return Options._trusted(items)

    def without(self, *codes: int) -> Options:
        return Options._trusted({c: p for c, p in self._items.items() if c not in codes})

    def items_list(self) -> list[tuple[int, bytes]]:
        return list(self._items.items())


_ZERO: Final = IPv4Address(0)
_Header = tuple[int, int, int, int, int, int, int, int, int, int, int, bytes, bytes, bytes, bytes]


class DhcpMessage:
    """One DHCP message, immutable; field names are RFC 2131's.

    ``chaddr``, ``sname`` and ``file`` are the whole fixed-size fields (zero padded; all
    zeros where option 52 overloaded them); :attr:`hardware_address` is the significant
    part of ``chaddr``. ``wire`` is the exact payload a decoded message came from (empty
    for messages built locally): RFC 3118 MACs are checked over it.

    The header is held as the tuple the wire format unpacks to and addresses become
    ``IPv4Address`` values when read: decoding builds one small object instead of sixteen
    attributes, which is most of what makes it faster than dpkt (docs/performance.md).
    """

    __slots__ = ("_header", "options", "wire")

    _header: _Header
    options: Options
    wire: bytes

    def __init__(
        self,
        op: int,
        *,
        xid: int = 0,
        htype: int = 1,
        hlen: int = 6,
        hops: int = 0,
        secs: int = 0,
        flags: int = 0,
        ciaddr: IPv4Address = _ZERO,
        yiaddr: IPv4Address = _ZERO,
        siaddr: IPv4Address = _ZERO,
        giaddr: IPv4Address = _ZERO,
        chaddr: bytes = b"",
        sname: bytes = b"",
        file: bytes = b"",
        options: Options | None = None,
        wire: bytes = b"",
    ) -> None:
        # ``|`` accepts only integers: a float or a string fails here, not in the encoder.
        if not (
            (op | htype | hlen | hops | xid | secs | flags) >= 0
            and op < 256
            and htype < 256
            and hlen < 256
            and hops < 256
            and xid < 0x100000000
            and secs < 0x10000
            and flags < 0x10000
        ):
            _complain_about_fields(op=op, htype=htype, hlen=hlen, hops=hops, xid=xid, secs=secs, flags=flags)
        if len(chaddr) > 16 or len(sname) > 64 or len(file) > 128:
            raise ValueError("chaddr, sname and file hold at most 16, 64 and 128 octets")
        if not (
            type(ciaddr) is IPv4Address
            and type(yiaddr) is IPv4Address
            and type(siaddr) is IPv4Address
            and type(giaddr) is IPv4Address
        ):
            raise TypeError("ciaddr, yiaddr, siaddr and giaddr are IPv4Address values")
        if options is None:
            options = Options()
        elif type(options) is not Options:
            raise TypeError("options must be an Options value")
        header: _Header = (
            op, htype, hlen, hops, xid, secs, flags,
            int(ciaddr), int(yiaddr), int(siaddr), int(giaddr),
            chaddr if len(chaddr) == 16 and type(chaddr) is bytes else bytes(chaddr).ljust(16, b"\0"),
            sname if len(sname) == 64 and type(sname) is bytes else bytes(sname).ljust(64, b"\0"),
            file if len(file) == 128 and type(file) is bytes else bytes(file).ljust(128, b"\0"),
            MAGIC_COOKIE,
        )  # fmt: skip
        _set(self, "_header", header)
        _set(self, "options", options)
        _set(self, "wire", bytes(wire))

    @classmethod
    def reply_to(
        cls,
        request: DhcpMessage,
        options: Options,
        *,
        yiaddr: IPv4Address = _ZERO,
        ciaddr: IPv4Address = _ZERO,
        flags: int | None = None,
    ) -> DhcpMessage:
        """A BOOTREPLY to ``request``: ``xid``, ``htype``, ``hlen``, ``flags``, ``giaddr``
        and ``chaddr`` copied as RFC 2131 table 3 says, ``hops``, ``secs``, ``siaddr``,
        ``sname`` and ``file`` zero. Built from the request's validated header, unchecked:
        a server builds one per message.
        """
        h = request._header
        msg: DhcpMessage = _new_message(cls)
        _set(msg, "_header", (
            2, h[1], h[2], 0, h[4], 0, h[6] if flags is None else flags,
            int(ciaddr), int(yiaddr), 0, h[10], h[11], _EMPTY_SNAME, _EMPTY_FILE, MAGIC_COOKIE,
        ))  # fmt: skip
        _set(msg, "options", options)
        _set(msg, "wire", b"")
        return msg

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DhcpMessage is immutable; use replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("DhcpMessage is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DhcpMessage):
            return self._header == other._header and self.options == other.options
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELD_NAMES)
        return f"DhcpMessage({fields}, options={self.options!r})"

    def replace(self, **changes: object) -> DhcpMessage:
        """A copy with some fields changed; ``wire`` is dropped unless given."""
        values: dict[str, object] = {name: getattr(self, name) for name in FIELD_NAMES}
        values["options"] = self.options
        values.update(changes)
        return DhcpMessage(**values)  # type: ignore[arg-type]

    @property
    def op(self) -> int:
        return self._header[0]

    @property
    def htype(self) -> int:
        return self._header[1]

    @property
    def hlen(self) -> int:
        return self._header[2]

    @property
    def hops(self) -> int:
        return self._header[3]

    @property
    def xid(self) -> int:
        return self._header[4]

    @property
    def secs(self) -> int:
        return self._header[5]

    @property
    def flags(self) -> int:
        return self._header[6]

    @property
    def ciaddr(self) -> IPv4Address:
        return ipv4(self._header[7])

    @property
    def yiaddr(self) -> IPv4Address:
        return ipv4(self._header[8])

    @property
    def siaddr(self) -> IPv4Address:
        return ipv4(self._header[9])

    @property
    def giaddr(self) -> IPv4Address:
        return ipv4(self._header[10])

    @property
    def chaddr(self) -> bytes:
        return self._header[11]

    @property
    def sname(self) -> bytes:
        return self._header[12]

    @property
    def file(self) -> bytes:
        return self._header[13]

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
        return self._header[11][: min(self._header[2], 16)]

    @property
    def broadcast(self) -> bool:
        return bool(self._header[6] & FLAG_BROADCAST)


#: The RFC 2131 header fields, in wire order.
FIELD_NAMES: Final = (
    "op", "htype", "hlen", "hops", "xid", "secs", "flags",
    "ciaddr", "yiaddr", "siaddr", "giaddr", "chaddr", "sname", "file",
)  # fmt: skip


def _complain_about_fields(**fields: int) -> None:
    bits = {"op": 8, "htype": 8, "hlen": 8, "hops": 8, "xid": 32, "secs": 16, "flags": 16}
    for name, value in fields.items():
        if not isinstance(value, int) or not 0 <= value < 1 << bits[name]:
            raise ValueError(f"{name} {value!r} is not a {bits[name]}-bit unsigned integer")


_new_message = object.__new__
_set = object.__setattr__


def decode_message(
    data: bytes, registry: OptionRegistry | None = None, *, strict: bool = False
) -> DhcpMessage:
    """Decode one DHCP message (a UDP payload).

    Raises :class:`DecodeError`, and nothing else, for any input that is not a well-formed
    DHCP message: short or oversized input, a missing magic cookie, an option running past
    its field, a bad option 52 or 53.

    Other option values are checked when read (``options.get_value`` raises
    :class:`DecodeError` for a malformed one), so a message is not refused for an option
    its receiver never looks at, as dhcpcd and Kea's lenient parsing do. ``strict=True``
    checks every option ``registry`` knows now (:func:`validate_options`).
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < _FIXED:
        raise DecodeError(f"message of {size} bytes is shorter than the 240-byte fixed part", size)
    if size > MAX_MESSAGE_SIZE:
        raise DecodeError(f"message of {size} bytes exceeds the largest UDP payload", MAX_MESSAGE_SIZE)
    header: _Header = _HEADER.unpack_from(data)
    if header[14] != MAGIC_COOKIE:
        raise DecodeError("missing DHCP magic cookie 99.130.83.99", 236)

    items: dict[int, bytes] = {}
    repeats: dict[int, list[bytes]] = {}
    budget = collect_field(data, _FIXED, size, items, repeats)
    overload_value = items.get(52)
    if overload_value is not None:
        # Option 52 counts only in the options field (RFC 2131 4.1), so read it before
        # file and sname can add instances of their own.
        if 52 in repeats or len(overload_value) != 1 or not 1 <= overload_value[0] <= 3:
            raise DecodeError("option_overload: value is not 1, 2 or 3", _packet_offset(data, 52, 0))
        overload = overload_value[0]
        if overload & 1:
            budget = collect_field(data, *_FILE, items, repeats, budget=budget)
        if overload & 2:
            collect_field(data, *_SNAME, items, repeats, budget=budget)
        if 52 in repeats:  # one in file or sname: it counts nowhere but the options field
            raise DecodeError("option_overload inside an overloaded field", _packet_offset(data, 52, 1))
        # The overloaded fields hold options, not names, and option 52 is the encoder's to
        # choose: dropping both lets a decoded message be re-encoded to the same bytes.
        del items[52]
        header = (
            *header[:12],
            bytes(64) if overload & 2 else header[12],
            bytes(128) if overload & 1 else header[13],
            MAGIC_COOKIE,
        )
    for code, parts in repeats.items():
        items[code] = b"".join(parts)  # RFC 3396: the instances are one option
    message_type = items.get(53)
    if message_type is not None and (len(message_type) != 1 or message_type[0] not in _MESSAGE_TYPES):
        raise DecodeError("message_type: not one octet naming a known type", _packet_offset(data, 53, 0))

    msg: DhcpMessage = _new_message(DhcpMessage)
    _set(msg, "_header", header)
    _set(msg, "options", Options._trusted(items))
    _set(msg, "wire", data)
    if strict:
        validate_options(msg, registry)
    return msg


_MESSAGE_TYPES: Final = frozenset(int(t) for t in MessageType)


def validate_options(msg: DhcpMessage, registry: OptionRegistry | None = None) -> None:
    """Raise :class:`DecodeError` for the first option ``registry`` knows whose value is malformed.

    Offsets are in ``msg.wire`` for a decoded message, else in the option's payload.
    """
    if registry is None:
        registry = DEFAULT_REGISTRY
    rules = registry.rules()
    for code, payload in msg.options.items():
        rule = rules.get(code)
        if rule is None:
            continue
        try:
            if type(rule) is tuple:
                size = len(payload)
                if size < rule[0] or size > rule[1] or size % rule[2]:
                    registry[code].validate(payload)  # raises, with the spec's own reason
            else:
                rule(payload)  # type: ignore[operator]
        except DecodeError as exc:
            if not msg.wire:
                raise
            raise DecodeError(exc.reason, _packet_offset(msg.wire, code, exc.offset)) from None


def _packet_offset(data: bytes, code: int, offset: int) -> int:
    """Where byte ``offset`` of ``code``'s concatenated payload lies in the packet.

    Only the error path needs instance positions, so they are found by a second scan.
    """
    spans: list[tuple[int, int, int]] = []
    budget = scan_field(data, _FIXED, len(data), spans)
    overload = next((data[s] for c, s, e in spans if c == 52 and e - s == 1), 0)
    if overload & 1:
        budget = scan_field(data, *_FILE, spans, budget)
    if overload & 2:
        scan_field(data, *_SNAME, spans, budget)
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
    file_free = msg.file == _EMPTY_FILE
    sname_free = msg.sname == _EMPTY_SNAME
    layout = layout_options(msg.options.items_list(), max_payload - _FIXED, file_free, sname_free)
    fields = msg._header
    if layout.overload:
        fields = (
            *fields[:12],
            fields[12] if layout.sname is None else layout.sname.ljust(64, b"\0"),
            fields[13] if layout.file is None else layout.file.ljust(128, b"\0"),
            MAGIC_COOKIE,
        )
    header = _HEADER.pack(*fields)
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
