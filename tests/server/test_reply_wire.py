"""The server's one-pass lease reply encoder against the reference path it replaces.

``encode_lease_reply`` must give exactly the bytes of ``DhcpMessage.reply_to`` +
``encode_message`` + ``sign`` + the option 82 insertion for every request it accepts, and
must decline (``None``) only where the reference needs overload or refuses.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from dhcp_server.engine import _append_relay_info
from dhcp_server.reply_wire import encode_lease_reply, option_tlvs
from options import DhcpMessage, EncodeError, Options, decode_message, encode_message
from options.rfc3118 import MacKey, StaticKeys, sign, verify
from options.strategies import encoded_messages

# Options a server puts in OFFER/ACK, including long ones that need RFC 3396 splitting.
_ITEMS = st.lists(
    st.tuples(
        st.integers(1, 254).filter(lambda c: c not in (52, 53, 82, 90)),
        st.binary(min_size=0, max_size=400),
    ),
    max_size=6,
    unique_by=lambda item: item[0],
)


def _auth_value(replay: int, secret_id: int) -> bytes:
    """Option 90 of a reply, delayed authentication, MAC zero (as Credentials.payload builds it)."""
    return b"\x02\x01\x00" + replay.to_bytes(8, "big") + secret_id.to_bytes(4, "big") + bytes(16)


@settings(max_examples=400, deadline=None)
@given(
    request=encoded_messages(),
    kind=st.sampled_from((2, 5)),
    items=_ITEMS,
    yiaddr=st.integers(0, 2**32 - 1),
    ciaddr=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0xFFFF),
    max_payload=st.sampled_from((241, 300, 400, 548, 1000, 1472)),
    key=st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
    relay_info=st.one_of(st.none(), st.binary(min_size=1, max_size=300)),
    replay=st.integers(0, 2**64 - 1),
)
def test_same_bytes_as_the_reference_path(
    request: bytes,
    kind: int,
    items: list[tuple[int, bytes]],
    yiaddr: int,
    ciaddr: int,
    flags: int,
    max_payload: int,
    key: bytes | None,
    relay_info: bytes | None,
    replay: int,
) -> None:
    pairs = [(53, bytes((kind,))), *items]
    if key is not None:
        pairs.append((90, _auth_value(replay, 7)))
    block = b"".join(option_tlvs(code, value) for code, value in pairs)
    mac_key = None if key is None else MacKey(key)
    fast = encode_lease_reply(request, block, yiaddr, ciaddr, flags, max_payload, mac_key, relay_info)

    reply = DhcpMessage.reply_to(
        decode_message(request), Options(dict(pairs)), yiaddr=IPv4Address(yiaddr), ciaddr=IPv4Address(ciaddr),
        flags=flags,
    )  # fmt: skip
    try:
        reference = encode_message(reply, max_payload=max_payload)
    except EncodeError:
        assert fast is None
        return
    if fast is None:
        # declined only where the reference overloads sname/file (RFC 2132 9.3)
        assert 240 + len(block) + 1 > max_payload
        assert reference[44:236] != bytes(192)
        return
    if key is not None:
        reference = sign(reference, key)
    if relay_info is not None:
        reference = _append_relay_info(reference, relay_info)
    assert fast == reference


def test_a_signed_reply_verifies_once_the_relay_strips_option_82() -> None:
    """What the client checks: the bytes the relay forwards carry a MAC it accepts."""
    request = encode_message(
        DhcpMessage(op=1, xid=0x1234, chaddr=b"\x02" * 6, giaddr=IPv4Address("10.0.0.1"))
    )
    block = (
        option_tlvs(53, b"\x05") + option_tlvs(54, bytes([10, 0, 0, 2])) + option_tlvs(90, _auth_value(9, 7))
    )
    wire = encode_lease_reply(request, block, 0x0A000063, 0, 0, 548, MacKey(b"k" * 16), b"\x01\x03abc")
    assert wire is not None
    stripped = wire.replace(b"\x52\x05\x01\x03abc", b"", 1)
    assert len(stripped) == len(wire) - 7
    assert verify(stripped, StaticKeys({7: b"k" * 16})).valid
    assert not verify(wire.replace(b"\x52\x05\x01\x03abc", b"", 1), StaticKeys({7: b"K" * 16})).valid
