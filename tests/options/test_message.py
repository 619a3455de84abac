"""Whole messages: round trips, totality of the decoder, and RFC 3118 sign/verify.

The decoder's contract (docs/wire-format.md section 1): any bytes give a message or a
:class:`DecodeError` whose offset lies inside the input, nothing else. The encoder's:
a message that fits comes back equal, field for field, and a decoded message re-encodes
to the very bytes our encoder produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from options import (
    DEFAULT_REGISTRY,
    DecodeError,
    DhcpMessage,
    EncodeError,
    Options,
    decode_message,
    encode_message,
)
from options.message import MAGIC_COOKIE, MAX_MESSAGE_SIZE
from options.rfc2132 import ROUTER
from options.rfc3118 import AUTHENTICATION, Authentication, StaticKeys, sign, verify, verify_token
from options.rfc3396 import END, UNSPLITTABLE, scan_field
from options.rfc6704 import forcerenew_hmac
from options.strategies import encoded_messages, hostile_bytes, ipv4_addresses, messages, options_maps

HEADER_FIELDS = (
    "op",
    "xid",
    "htype",
    "hlen",
    "hops",
    "secs",
    "flags",
    "ciaddr",
    "yiaddr",
    "siaddr",
    "giaddr",
    "chaddr",
    "sname",
    "file",
)
MAX_PAYLOADS = st.one_of(st.sampled_from((548, 1472, 8164, MAX_MESSAGE_SIZE)), st.integers(241, 70000))
HOPS = 3
GIADDR = range(24, 28)


def budget(share: float) -> int:
    """A share of the profile's ``max_examples`` (100 unless HYPOTHESIS_PROFILE says otherwise)."""
    return max(5, int(settings().max_examples * share))


def assert_decode_total(data: bytes) -> DhcpMessage | None:
    """Decode ``data``: a message, or None after checking the DecodeError is well formed.

    Option values are checked when read (docs/wire-format.md): each known option's value
    reads or raises DecodeError, and strict decoding refuses exactly the messages where
    one does not read.
    """
    try:
        msg = decode_message(data)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data), (exc, len(data))
        assert exc.reason
        return None
    _ = msg.message_type
    malformed = []
    for code in msg.options:
        spec = DEFAULT_REGISTRY.get(code)
        if spec is not None:
            try:
                spec.decode(msg.options[code])
            except DecodeError as exc:
                assert exc.reason
                malformed.append(code)
    try:
        decode_message(data, strict=True)
    except DecodeError as exc:
        assert malformed, f"strict decoding refused a message whose options all read: {exc}"
        assert 0 <= exc.offset <= len(data), (exc, len(data))
    else:
        assert not malformed, f"strict decoding accepted malformed options {malformed}"
    return msg


# -- round trips -----------------------------------------------------------------------


def expected_order(msg: DhcpMessage, wire: bytes) -> list[int]:
    """First-seen order after a round trip: the message's own, except that with overload
    the encoder pins options 53 and 90 to the options field, ahead of the rest."""
    spans: list[tuple[int, int, int]] = []
    scan_field(wire, 240, len(wire), spans)
    codes = list(msg.options)
    if not any(code == 52 for code, _, _ in spans):
        return codes
    return [c for c in codes if c in UNSPLITTABLE] + [c for c in codes if c not in UNSPLITTABLE]


@settings(max_examples=budget(1.0), deadline=None)
@given(msg=messages(), max_payload=MAX_PAYLOADS)
def test_decode_of_encode_is_the_message(msg: DhcpMessage, max_payload: int) -> None:
    try:
        wire = encode_message(msg, max_payload=max_payload)
    except EncodeError:
        max_payload = MAX_MESSAGE_SIZE  # too big for that limit (test_rfc3396 checks why); try the largest
        wire = encode_message(msg, max_payload=max_payload)
    assert len(wire) <= max_payload
    decoded = decode_message(wire)
    for name in HEADER_FIELDS:
        assert getattr(decoded, name) == getattr(msg, name), name
    assert decoded.options == msg.options
    assert list(decoded.options) == expected_order(msg, wire)
    assert decoded == msg
    assert decoded.wire == wire
    assert encode_message(decoded, max_payload=max_payload) == wire


def test_a_locally_built_message_with_short_fields_comes_back_zero_padded() -> None:
    mac = b"\x02\x00\x00\x00\x00\x01"
    msg = DhcpMessage(op=1, chaddr=mac, sname=b"srv", file=b"boot")
    decoded = decode_message(encode_message(msg))
    assert decoded.chaddr == mac.ljust(16, b"\0")
    assert decoded.sname == b"srv".ljust(64, b"\0")
    assert decoded.file == b"boot".ljust(128, b"\0")
    assert decoded.hardware_address == mac


# -- decoder totality ------------------------------------------------------------------


def _short_messages() -> st.SearchStrategy[bytes]:
    """Encodings of at most a few kilobytes, so cutting at every offset stays cheap."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        msg = draw(messages(options=options_maps(max_known=6, max_unknown=2)))
        try:
            return encode_message(msg, max_payload=draw(st.sampled_from((300, 548, 1472))))
        except EncodeError:
            return encode_message(msg, max_payload=MAX_MESSAGE_SIZE)

    return build()


def _end_of_options_field(wire: bytes) -> int:
    """The offset just past the options field's END octet."""
    spans: list[tuple[int, int, int]] = []
    scan_field(wire, 240, len(wire), spans)
    end = spans[-1][2] if spans else 240
    assert wire[end] == END
    return end + 1


@settings(max_examples=budget(0.15), deadline=None)
@given(wire=_short_messages())
def test_truncation_at_every_offset_decodes_or_raises_decode_error(wire: bytes) -> None:
    original = decode_message(wire)
    complete_from = _end_of_options_field(wire)
    for cut in range(len(wire)):
        decoded = assert_decode_total(wire[:cut])
        if cut < 240:
            assert decoded is None  # shorter than the fixed part
        elif cut >= complete_from:
            assert decoded == original  # only padding after END was lost


@settings(max_examples=budget(1.0), deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=1200),
        st.tuples(st.binary(min_size=236, max_size=236), st.binary(max_size=1200)).map(
            lambda hb: hb[0] + MAGIC_COOKIE + hb[1]
        ),
    )
)
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    assert_decode_total(data)


@settings(max_examples=budget(1.5), deadline=None)
@given(data=hostile_bytes())
def test_hostile_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    msg = assert_decode_total(data)
    if msg is None:
        return
    # What decodes can be sent on: re-encoding fails only with EncodeError, and what it
    # produces decodes to the same message.
    try:
        again = encode_message(msg, max_payload=MAX_MESSAGE_SIZE)
    except EncodeError:
        return
    assert decode_message(again) == msg


def test_oversized_and_undersized_inputs_carry_offsets_inside_the_input() -> None:
    with pytest.raises(DecodeError) as short:
        decode_message(bytes(239))
    assert short.value.offset == 239
    with pytest.raises(DecodeError) as big:
        decode_message(bytes(236) + MAGIC_COOKIE + bytes(MAX_MESSAGE_SIZE))
    assert 0 <= big.value.offset <= MAX_MESSAGE_SIZE + 240
    with pytest.raises(DecodeError, match="magic cookie") as cookie:
        decode_message(bytes(300))
    assert cookie.value.offset == 236


def test_a_validation_error_in_a_split_option_points_into_the_packet() -> None:
    # Option 3 (routers) split in two instances: 252 + 3 octets, so 255 in all, not a
    # multiple of 4. The error used to be reported at first-instance start + payload
    # offset, which can lie past the end of the data.
    options_field = bytes((3, 252)) + bytes(252) + bytes((3, 3)) + bytes(3) + bytes((END,))
    data = bytes(236) + MAGIC_COOKIE + options_field
    with pytest.raises(DecodeError) as exc:
        decode_message(data, strict=True)
    assert 0 <= exc.value.offset <= len(data)
    # Without strict, the message decodes and the value fails only when read.
    lazy = decode_message(data)
    with pytest.raises(DecodeError, match="router"):
        lazy.options.get_value(ROUTER)


def test_encoded_messages_strategy_yields_decodable_bytes() -> None:
    @settings(max_examples=budget(0.2), deadline=None)
    @given(wire=encoded_messages())
    def check(wire: bytes) -> None:
        assert len(wire) <= MAX_MESSAGE_SIZE
        decode_message(wire)

    check()


# -- RFC 3118 sign / verify ------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    wire: bytes
    keys: StaticKeys
    key: bytes
    auth: Authentication
    nonce: bytes | None


@st.composite
def signed_messages(draw: st.DrawFn) -> Signed:
    """A message of random content carrying option 90 with a MAC, signed."""
    variant = draw(st.sampled_from(("delayed", "realm", "nonce")))
    replay = draw(st.integers(0, (1 << 64) - 1))
    key = draw(st.binary(min_size=1, max_size=64))
    secret_id = draw(st.integers(0, 0xFFFFFFFF))
    nonce: bytes | None = None
    if variant == "delayed":
        auth = Authentication.delayed(replay, secret_id)
        keys = StaticKeys({secret_id: key})
    elif variant == "realm":
        realm = draw(st.binary(min_size=1, max_size=40))
        auth = Authentication.delayed(replay, secret_id, realm=realm)
        keys = StaticKeys({(realm, secret_id): key})
    else:
        auth = forcerenew_hmac(replay)
        keys = StaticKeys({})
        nonce = key
    base = draw(messages(options=options_maps(max_known=5, max_unknown=2)))
    items = base.options.without(90).items_list()
    items.insert(draw(st.integers(0, len(items))), AUTHENTICATION.item(auth))
    msg = DhcpMessage(
        op=base.op,
        xid=base.xid,
        hops=base.hops,
        giaddr=base.giaddr,
        chaddr=base.chaddr,
        sname=base.sname,
        file=base.file,
        options=Options(items),
    )
    try:
        wire = encode_message(msg, max_payload=draw(st.sampled_from((300, 548))))
    except EncodeError:
        wire = encode_message(msg, max_payload=MAX_MESSAGE_SIZE)
    return Signed(sign(wire, key), keys, key, auth, nonce)


@settings(max_examples=budget(0.5), deadline=None)
@given(s=signed_messages())
def test_sign_then_verify_is_valid(s: Signed) -> None:
    check = verify(s.wire, s.keys, nonce=s.nonce)
    assert check.valid, check.reason
    assert check.reason == "valid"
    assert check.auth is not None
    assert check.auth.replay_detection == s.auth.replay_detection


@settings(max_examples=budget(0.05), deadline=None)
@given(s=signed_messages())
def test_every_single_bit_flip_outside_hops_and_giaddr_breaks_verification(s: Signed) -> None:
    assert verify(s.wire, s.keys, nonce=s.nonce).valid
    for index in range(len(s.wire)):
        if index == HOPS or index in GIADDR:
            continue
        for bit in range(8):
            flipped = bytearray(s.wire)
            flipped[index] ^= 1 << bit
            check = verify(bytes(flipped), s.keys, nonce=s.nonce)
            assert not check.valid, (index, bit)


@settings(max_examples=budget(0.3), deadline=None)
@given(s=signed_messages(), hops=st.integers(0, 255), giaddr=ipv4_addresses())
def test_relays_may_change_hops_and_giaddr(s: Signed, hops: int, giaddr: IPv4Address) -> None:
    relayed = s.wire[:HOPS] + bytes((hops,)) + s.wire[HOPS + 1 : 24] + giaddr.packed + s.wire[28:]
    check = verify(relayed, s.keys, nonce=s.nonce)
    assert check.valid, check.reason


@settings(max_examples=budget(0.3), deadline=None)
@given(s=signed_messages(), other=st.binary(min_size=1, max_size=64))
def test_a_wrong_key_fails(s: Signed, other: bytes) -> None:
    if other.rstrip(b"\0") == s.key.rstrip(b"\0"):  # HMAC pads keys with zeros: the same key
        other = s.key.rstrip(b"\0") + b"x"
    if s.nonce is not None:
        check = verify(s.wire, s.keys, nonce=other)
    else:
        assert s.auth.secret_id is not None
        check = verify(s.wire, StaticKeys({(s.auth.realm, s.auth.secret_id): other}))
    assert not check.valid
    assert check.reason == "MAC mismatch"


@settings(max_examples=budget(0.2), deadline=None)
@given(s=signed_messages())
def test_missing_credentials_fail_with_a_reason(s: Signed) -> None:
    if s.nonce is None:
        check = verify(s.wire, StaticKeys({}))
        assert not check.valid
        assert check.reason == f"unknown secret ID {s.auth.secret_id}"
    else:
        check = verify(s.wire, s.keys)
        assert not check.valid
        assert "nonce" in check.reason


def test_an_option_90_split_in_two_instances_fails_verification() -> None:
    auth = Authentication.delayed(7, secret_id=1)
    payload = AUTHENTICATION.encode(auth)
    options_field = bytes((53, 1, 5, 90, 10)) + payload[:10] + bytes((90, len(payload) - 10)) + payload[10:]
    data = bytes((2, 1, 6, 0)) + bytes(232) + MAGIC_COOKIE + options_field + bytes((END,))
    decode_message(data)  # well formed as DHCP: RFC 3396 joins the two instances
    check = verify(data, StaticKeys({1: b"k"}))
    assert not check.valid
    assert check.reason == "authentication option appears more than once"


def test_signing_a_message_without_a_mac_field_is_refused() -> None:
    msg = DhcpMessage(op=1, options=Options([AUTHENTICATION.item(Authentication.delayed(1))]))
    with pytest.raises(ValueError, match="no MAC field"):
        sign(encode_message(msg), b"key")


@settings(max_examples=budget(0.5), deadline=None)
@given(data=hostile_bytes(), key=st.binary(max_size=16))
def test_verify_never_raises(data: bytes, key: bytes) -> None:
    check = verify(data, StaticKeys({0: key}), nonce=key)
    assert isinstance(check.valid, bool)
    assert check.reason


def test_configuration_token_is_checked_in_constant_time_and_only_for_protocol_0() -> None:
    token_auth = Authentication.token(1, b"shared-token")
    msg = DhcpMessage(op=1, xid=7, options=Options([AUTHENTICATION.item(token_auth)]))
    payload = encode_message(msg)
    assert verify_token(payload, b"shared-token").valid
    assert verify_token(payload, b"shared-tokeN").reason == "token mismatch"
    delayed = encode_message(
        DhcpMessage(op=1, options=Options([AUTHENTICATION.item(Authentication.delayed(1))]))
    )
    assert not verify_token(delayed, b"shared-token").valid
    assert not verify_token(bytes(300), b"x").valid


def test_reply_to_copies_the_fields_rfc2131_table_3_says() -> None:
    request = DhcpMessage(
        op=1, xid=0xABCD, htype=1, hlen=6, hops=2, secs=9, flags=0x8000,
        ciaddr=IPv4Address("10.0.0.9"), giaddr=IPv4Address("10.0.0.1"), chaddr=bytes.fromhex("020000000001"),
        sname=b"host", file=b"boot",
    )  # fmt: skip
    reply = DhcpMessage.reply_to(request, Options(), yiaddr=IPv4Address("10.0.0.20"))
    expected = DhcpMessage(
        op=2, xid=0xABCD, htype=1, hlen=6, flags=0x8000, yiaddr=IPv4Address("10.0.0.20"),
        giaddr=IPv4Address("10.0.0.1"), chaddr=bytes.fromhex("020000000001"),
    )  # fmt: skip
    assert reply == expected
    assert decode_message(encode_message(reply)) == expected
