"""RFC 3396 long options and RFC 2131 option overload: options as a stream of instances.

Decoding: the options field, then ``file``, then ``sname`` (when option 52 says they hold
options) are scanned into instances and "the contents of these options are concatenated
together to form a single option prior to processing" (RFC 3396 section 5).

Encoding: payloads longer than 255 octets become several instances of the same code, and
when the options field is full the remaining instances continue in ``file`` then ``sname``
(RFC 3396 section 6), each field ending with END.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from options.errors import DecodeError, EncodeError

__all__ = [
    "END",
    "MAX_INSTANCES",
    "PAD",
    "UNSPLITTABLE",
    "FieldLayout",
    "collect_field",
    "instances",
    "layout_options",
    "scan_field",
]

PAD: Final = 0
END: Final = 255

#: Bound on option instances per message, so hostile input costs little. A 1,000-CE
#: Peer-CE list needs about 20; real clients send fewer than 30.
MAX_INSTANCES: Final = 1024

#: Options that travel as one instance in the options field (never in overloaded file or
#: sname): option 52 itself (RFC 2131 4.1), the message type, and RFC 3118
#: authentication, whose MAC is located and checked in place (dhcpcd refuses two
#: instances; readers without overload support would not find it elsewhere).
UNSPLITTABLE: Final = frozenset({52, 53, 90})

_CODE_LENGTH: Final = struct.Struct("BB").pack
_END_OCTET: Final = bytes((END,))


def scan_field(
    data: bytes, start: int, end: int, spans: list[tuple[int, int, int]], budget: int = MAX_INSTANCES
) -> int:
    """Append ``(code, value_start, value_end)`` for each option in ``data[start:end]``.

    Stops at END; bytes after END are padding and ignored (dhcpcd's MAC covers them, so
    they are kept in the message's wire image). A missing END is tolerated. Returns the
    remaining instance budget.
    """
    pos = start
    append = spans.append
    while pos < end:
        code = data[pos]
        if code == PAD:
            pos += 1
            continue
        if code == END:
            break
        if pos + 1 >= end:
            raise DecodeError(f"option {code}: length octet missing", pos)
        value_start = pos + 2
        value_end = value_start + data[pos + 1]
        if value_end > end:
            raise DecodeError(f"option {code}: length {data[pos + 1]} runs past the end of the field", pos)
        budget -= 1
        if budget < 0:
            raise DecodeError(f"more than {MAX_INSTANCES} option instances", pos)
        append((code, value_start, value_end))
        pos = value_end
    return budget


def instances(code: int, payload: bytes) -> list[bytes]:
    """The encoded instances of one option: 255-octet pieces, each with its code and length.

    An empty payload is one instance of length 0 (RFC 3396 keeps zero-length options).
    """
    if not payload:
        return [bytes((code, 0))]
    return [
        bytes((code, len(piece))) + piece
        for piece in (payload[i : i + 255] for i in range(0, len(payload), 255))
    ]


class FieldLayout(NamedTuple):
    """The encoded bytes of the options, ``file`` and ``sname`` fields of one message."""

    options: bytes
    file: bytes | None = None
    sname: bytes | None = None

    @property
    def overload(self) -> int:
        return (1 if self.file is not None else 0) | (2 if self.sname is not None else 0)


def _fill(capacity: int, pending: list[tuple[int, bytes]]) -> bytes:
    """Pack as much of ``pending`` as fits before an END octet in ``capacity`` bytes.

    Consumes ``pending`` from the front; a splittable option that does not fit whole is
    split, leaving its tail at the front of ``pending`` (RFC 3396 section 6).
    """
    out = bytearray()
    room = capacity - 1  # the END octet
    while pending:
        code, payload = pending[0]
        need = 2 + len(payload)
        if len(payload) <= 255 and need <= room:
            out += bytes((code, len(payload))) + payload
            room -= need
            pending.pop(0)
            continue
        if code in UNSPLITTABLE or room < 3:
            break
        take = min(room - 2, 255, len(payload))
        out += bytes((code, take)) + payload[:take]
        room -= 2 + take
        pending[0] = (code, payload[take:])
    out.append(END)
    return bytes(out)


def layout_options(
    items: list[tuple[int, bytes]], options_room: int, file_free: bool, sname_free: bool
) -> FieldLayout:
    """Place options in the options field, overloading ``file``/``sname`` only when needed.

    ``options_room`` is how many bytes the options field may take (the peer's maximum
    message size minus the 240-byte fixed part). Raises :class:`EncodeError` when the
    options do not fit even with overload.
    """
    parts: list[bytes] = []
    for code, payload in items:
        size = len(payload)
        if size <= 255:
            parts += (_CODE_LENGTH(code, size), payload)
        elif code in UNSPLITTABLE:
            raise EncodeError(f"option {code} has {size} octets; it is never split, so 255 at most")
        else:
            parts += instances(code, payload)
    plain = b"".join(parts)
    if len(plain) + 1 <= options_room:
        return FieldLayout(plain + _END_OCTET)
    if not (file_free or sname_free):
        raise EncodeError(
            f"options need {len(plain) + 1} bytes, {options_room} fit, and file/sname are in use so "
            "option overload cannot help"
        )
    if options_room < 4:  # option 52 must be in the options field (RFC 2131 4.1), before END
        raise EncodeError(f"options need {len(plain) + 1} bytes, {options_room} fit: no room for option 52")
    overload = (1 if file_free else 0) | (2 if sname_free else 0)
    # Options 53 and 90 go first, right after 52, so they stay in the options field:
    # readers without overload support still find the message type and the MAC.
    pinned = [(code, payload) for code, payload in items if code in UNSPLITTABLE]
    pending = [(52, bytes((overload,))), *pinned, *(item for item in items if item[0] not in UNSPLITTABLE)]
    head = _fill(options_room, pending)
    if any(code in UNSPLITTABLE for code, _ in pending):
        raise EncodeError(f"options 52, 53 and 90 do not fit the {options_room}-byte options field together")
    file = _fill(128, pending) if file_free else None
    sname = _fill(64, pending) if sname_free else None
    if pending:
        left = sum(2 + len(p) for _, p in pending)
        raise EncodeError(
            f"options do not fit: about {left} bytes remain after filling the options field "
            f"({options_room} bytes) and the overloaded file/sname fields"
        )
    return FieldLayout(head, file, sname)


def collect_field(
    data: bytes,
    start: int,
    end: int,
    items: dict[int, bytes],
    repeats: dict[int, list[bytes]],
    *,
    budget: int = MAX_INSTANCES,
) -> int:
    """Add the options of ``data[start:end]`` to ``items``; later instances of a code go to ``repeats``.

    The decoder's hot path: the same walk as :func:`scan_field` (the tests hold them to
    agree), without the span list that only error reporting and MAC location need.
    Repeated instances are gathered in lists and joined once by the caller, so a message
    of many small instances costs linear time. ``budget`` bounds repeated instances;
    first instances are bounded by the 254 codes. Returns the budget left.
    """
    pos = start
    try:
        while pos < end:
            code = data[pos]
            if 0 < code < END:
                value_end = pos + 2 + data[pos + 1]
                if value_end > end:
                    raise DecodeError(
                        f"option {code}: length {data[pos + 1]} runs past the end of the field", pos
                    )
                if code in items:
                    budget -= 1
                    if budget < 0:
                        raise DecodeError(f"more than {MAX_INSTANCES} repeated option instances", pos)
                    parts = repeats.get(code)
                    if parts is None:
                        repeats[code] = [items[code], data[pos + 2 : value_end]]
                    else:
                        parts.append(data[pos + 2 : value_end])
                else:
                    items[code] = data[pos + 2 : value_end]
                pos = value_end
            elif code == PAD:
                pos += 1
            else:
                break
    except IndexError:
        raise DecodeError(f"option {data[pos]}: length octet missing", pos) from None
    return budget
