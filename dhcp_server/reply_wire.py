"""OFFER and ACK bytes built straight from the request's bytes: the server's hot path.

A lease reply is the request's header with a few fields changed, the message type, a block
of subnet options encoded once at start-up, and perhaps option 90. Building it through
:meth:`options.DhcpMessage.reply_to`, :func:`options.encode_message`,
:func:`options.rfc3118.sign` and an option 82 insertion costs several message objects and
two scans of the options per reply; this builds the same bytes in one pass, and the MAC
from the same pieces. ``tests/server/test_reply_wire.py`` holds it to the reference path
byte for byte; anything this does not cover (a reply larger than the client accepts, which
needs overload or is refused) returns ``None`` and the engine takes the reference path.
"""

from __future__ import annotations

import struct
from typing import Final

from options.message import MAGIC_COOKIE
from options.rfc3118 import MacKey
from options.rfc3396 import instances

__all__ = ["encode_lease_reply", "option_tlvs"]

# op, htype+hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr: RFC 2131 table 3.
_HEAD: Final = struct.Struct("!B2sB4sHHII4x")
_ZERO_GIADDR: Final = bytes(4)
_SNAME_FILE_COOKIE: Final = bytes(64 + 128) + MAGIC_COOKIE
_END: Final = b"\xff"
_MAC_SIZE: Final = 16
_FIXED: Final = 240
_BOOTP_MIN: Final = 300


def option_tlvs(code: int, value: bytes) -> bytes:
    """``value`` as option ``code``, split into RFC 3396 instances when longer than 255 octets."""
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    return b"".join(instances(code, value))


def encode_lease_reply(  # noqa: PLR0917 (the reply's fields, all needed, in wire order)
    request: bytes,
    options: bytes,
    yiaddr: int,
    ciaddr: int,
    flags: int,
    max_payload: int,
    key: MacKey | None = None,
    relay_info: bytes | None = None,
) -> bytes | None:
    """A BOOTREPLY to the ``request`` datagram carrying ``options`` (encoded, no END).

    With ``key``, ``options`` ends with option 90 whose last 16 octets are the MAC, zero
    here, filled in over the padded message with giaddr zeroed (RFC 3118). ``relay_info``
    (option 82 exactly as received) goes just before END after signing: the relay strips
    it, and the client checks the MAC over the rest (RFC 3046 2.2). ``None`` when the
    options do not fit ``max_payload`` without overload.
    """
    size = _FIXED + len(options) + 1
    if size > max_payload:
        return None
    floor = min(_BOOTP_MIN, max_payload)
    padding = bytes(floor - size) if size < floor else b""
    head = _HEAD.pack(2, request[1:3], 0, request[4:8], 0, flags, ciaddr, yiaddr)
    tail = request[28:44] + _SNAME_FILE_COOKIE
    if key is not None:
        mac = key.digest(b"".join((head, _ZERO_GIADDR, tail, options, _END, padding)))
        options = options[:-_MAC_SIZE] + mac
    if relay_info is not None:
        options += option_tlvs(82, relay_info)
    return b"".join((head, request[24:28], tail, options, _END, padding))
