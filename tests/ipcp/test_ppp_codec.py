"""Codec round trips and totality: every value re-encodes identically, every byte string decodes or
raises DecodeError (never anything else), truncation at every offset included."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcp import strategies as ps
from ipcp.frame import Frame, Protocol, decode_frame, encode_frame
from ipcp.ipcp_options import IPCP_OPTIONS, ipcp_registry
from ipcp.lcp_options import LCP_OPTIONS, MagicNumber, MaximumReceiveUnit
from ipcp.option import MAX_OPTIONS_PER_PACKET, Option, UnknownOption, encode_options, split_options
from ipcp.packet import (
    LCP_CODES,
    NCP_CODES,
    ConfigureNak,
    ConfigureRequest,
    EchoRequest,
    Packet,
    ProtocolReject,
    TerminateAck,
    UnknownCodePacket,
    decode_packet,
)
from ipcp.rfc1332 import VJ_COMPRESSED_TCP, IpAddress, IpCompressionProtocol
from ipcp.rfc1877 import PrimaryDns
from ipcp.vpn_option import (
    DEFAULT_VPN_OPTION_TYPE,
    MAX_ADDRESSES_PER_OPTION,
    VpnIpAddresses,
    apply_vpn_options,
    vpn_options_for,
)
from options.errors import DecodeError


def _a(text: str) -> IPv4Address:
    return IPv4Address(text)


@given(ps.lcp_options)
def test_lcp_option_round_trip(option: Option) -> None:
    wire = option.encode()
    assert LCP_OPTIONS.decode(wire) == (option,)
    assert wire[1] == len(wire)


@given(ps.ipcp_options)
def test_ipcp_option_round_trip(option: Option) -> None:
    wire = option.encode()
    assert IPCP_OPTIONS.decode(wire) == (option,)


@given(ps.lcp_packets)
def test_lcp_packet_round_trip(packet: Packet) -> None:
    wire = packet.encode()
    assert decode_packet(wire, LCP_OPTIONS, codes=LCP_CODES) == packet


@given(ps.ncp_packets)
def test_ipcp_packet_round_trip(packet: Packet) -> None:
    wire = packet.encode()
    assert decode_packet(wire, IPCP_OPTIONS, codes=NCP_CODES) == packet


@given(ps.ncp_packets, st.binary(min_size=1, max_size=10))
def test_padding_beyond_length_is_ignored(packet: Packet, padding: bytes) -> None:
    """RFC 1661 section 5: octets outside the Length field are padding, ignored on reception."""
    assert decode_packet(packet.encode() + padding, IPCP_OPTIONS, codes=NCP_CODES) == packet


@given(ps.frames, st.booleans(), st.booleans())
def test_frame_round_trip_with_and_without_compression(frame: Frame, acfc: bool, pfc: bool) -> None:
    wire = encode_frame(frame, acfc=acfc, pfc=pfc)
    assert decode_frame(wire) == frame


def test_lcp_frames_never_lose_address_and_control() -> None:
    assert encode_frame(Frame(Protocol.LCP, b"x"), acfc=True, pfc=True) == b"\xff\x03\xc0\x21x"
    assert encode_frame(Frame(Protocol.IPCP, b"x"), acfc=True, pfc=True) == b"\x80\x21x"
    assert encode_frame(Frame(Protocol.IPV4, b"x"), acfc=True, pfc=True) == b"\x21x"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "truncated"),
        (b"\xff", "truncated control"),
        (b"\xff\x05\xc0\x21", "control field"),
        (b"\xff\x03\xc0\x20", "even low octet"),
        (b"\xc0", "truncated protocol low octet"),
    ],
)
def test_bad_frame_headers(wire: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_frame(wire)


@given(ps.ncp_packets)
def test_truncation_at_every_offset_raises_decode_error_only(packet: Packet) -> None:
    wire = packet.encode()
    for cut in range(len(wire)):
        with pytest.raises(DecodeError) as info:
            decode_packet(wire[:cut], IPCP_OPTIONS, codes=NCP_CODES)
        assert 0 <= info.value.offset <= cut


@given(ps.ipcp_options)
def test_option_truncation_raises_decode_error(option: Option) -> None:
    wire = option.encode()
    for cut in range(1, len(wire)):
        with pytest.raises(DecodeError):
            IPCP_OPTIONS.decode(wire[:cut])


@given(ps.hostile_bytes())
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    errors: list[DecodeError] = []
    for registry, codes in ((LCP_OPTIONS, LCP_CODES), (IPCP_OPTIONS, NCP_CODES)):
        try:
            decode_packet(data, registry, codes=codes)
        except DecodeError as error:
            errors.append(error)
    try:
        decode_frame(data)
    except DecodeError as error:
        errors.append(error)
    assert all(0 <= e.offset <= len(data) for e in errors)


@given(ps.hostile_bytes())
def test_decode_each_is_total(data: bytes) -> None:
    try:
        items = list(IPCP_OPTIONS.decode_each(data))
    except DecodeError:
        return
    assert b"".join(i.raw if isinstance(i, tuple) else i.encode() for i in items) == data


def test_decode_error_offsets_are_absolute() -> None:
    wire = ConfigureRequest(1, (IpAddress(_a("10.0.0.1")),)).encode() + b"\x81\x05\x00\x00\x00"
    wire = wire[:2] + len(wire).to_bytes(2, "big") + wire[4:]
    with pytest.raises(DecodeError, match="truncated name server address") as info:
        decode_packet(wire, IPCP_OPTIONS, codes=NCP_CODES)
    assert info.value.offset == 4 + 6 + 2  # header, first option, then the second option's data


def test_option_length_below_two() -> None:
    with pytest.raises(DecodeError, match="below the minimum of 2") as info:
        split_options(b"\x03\x06\x00\x00\x00\x00\x90\x01", 0)
    assert info.value.offset == 7


def test_options_per_packet_bounded() -> None:
    data = b"\x07\x02" * (MAX_OPTIONS_PER_PACKET + 1)
    with pytest.raises(DecodeError, match="more than"):
        split_options(data)
    assert len(split_options(data[:-2])) == MAX_OPTIONS_PER_PACKET


def test_packet_length_bounds() -> None:
    with pytest.raises(DecodeError, match="below the 4-octet header"):
        decode_packet(b"\x01\x01\x00\x03", IPCP_OPTIONS)
    with pytest.raises(DecodeError, match="exceeds"):
        decode_packet(b"\x01\x01\x00\x09\x03\x06", IPCP_OPTIONS)


def test_unknown_codes_are_kept() -> None:
    assert decode_packet(b"\x09\x07\x00\x06ab", IPCP_OPTIONS, codes=NCP_CODES) == UnknownCodePacket(
        9, 7, b"ab"
    )
    assert decode_packet(b"\x0c\x07\x00\x04", LCP_OPTIONS) == UnknownCodePacket(12, 7)


def test_known_lcp_packet_shapes() -> None:
    assert decode_packet(bytes.fromhex("0902000cdeadbeef70696e67"), LCP_OPTIONS) == EchoRequest(
        2, 0xDEADBEEF, b"ping"
    )
    assert decode_packet(bytes.fromhex("06020004"), LCP_OPTIONS) == TerminateAck(2)
    reject = decode_packet(bytes.fromhex("0803000880fd0101"), LCP_OPTIONS)
    assert reject == ProtocolReject(3, 0x80FD, b"\x01\x01")


# --- values validate themselves -------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: MaximumReceiveUnit(70000),
        lambda: MagicNumber(-1),
        lambda: UnknownOption(256),
        lambda: UnknownOption(9, b"x" * 254),
        lambda: IpCompressionProtocol(0x10000),
        lambda: VpnIpAddresses(1 << 32),
        lambda: VpnIpAddresses(1, (_a("10.0.0.1"),) * 62),
        lambda: VpnIpAddresses(1, reserved=0x8000),
        lambda: ConfigureRequest(256),
        lambda: Frame(0x0020),
    ],
)
def test_invalid_values_refused_at_construction(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):  # noqa: PT011 -- each builder has its own message
        build()


def test_unknown_options_kept_byte_exact_and_in_order() -> None:
    wire = bytes.fromhex("9004abcd0306c0000201fe028106c0000235")
    options = IPCP_OPTIONS.decode(wire)
    assert options == (
        UnknownOption(0x90, b"\xab\xcd"),
        IpAddress(_a("192.0.2.1")),
        UnknownOption(0xFE),
        PrimaryDns(_a("192.0.2.53")),
    )
    assert encode_options(options) == wire


def test_van_jacobson_parameters() -> None:
    vj = IpCompressionProtocol.van_jacobson(15, True)
    assert vj.encode() == bytes.fromhex("0206002d0f01")
    assert vj.vj_parameters == (15, 1)
    assert IpCompressionProtocol(VJ_COMPRESSED_TCP).vj_parameters is None  # RFC 1172 form


# --- VPN-IP-Addresses ----------------------------------------------------------------------------


def test_vpn_option_layout_follows_the_draft_diagram() -> None:
    """Type, Length, Reserved(15 bits)+A, VPN-ID(4), addresses: 8 + 4n octets."""
    option = VpnIpAddresses(7, (_a("10.9.0.1"), _a("10.9.0.2")), add=True)
    wire = option.encode()
    assert wire == bytes.fromhex("c8 10 0001 00000007 0a090001 0a090002")
    assert len(wire) == 8 + 4 * 2
    assert VpnIpAddresses(7, (_a("10.9.0.1"),), add=False).encode()[2:4] == b"\x00\x00"


def test_vpn_option_empty_list_allowed() -> None:
    assert VpnIpAddresses(0).encode() == bytes.fromhex("c8080001 00000000")
    assert IPCP_OPTIONS.decode(bytes.fromhex("c8080001 00000000")) == (VpnIpAddresses(0),)


def test_vpn_option_reserved_bits_preserved() -> None:
    wire = bytes.fromhex("c808 8003 00000005")
    (option,) = IPCP_OPTIONS.decode(wire)
    assert isinstance(option, VpnIpAddresses)
    assert option.add
    assert option.reserved == 0x4001
    assert option.encode() == wire


@pytest.mark.parametrize("total", [2, 3, 4, 6, 7, 10, 14])
def test_vpn_option_lengths_other_than_8_plus_4n_refused(total: int) -> None:
    """The draft text's 6 + 4n reading (no Reserved field) is refused: lengths are 2 mod 4 there."""
    wire = bytes((DEFAULT_VPN_OPTION_TYPE, total)) + bytes(total - 2)
    with pytest.raises(DecodeError, match="not 8 \\+ 4n") as info:
        IPCP_OPTIONS.decode(wire)
    assert info.value.offset == 1


def test_vpn_option_holds_at_most_61_addresses() -> None:
    addresses = tuple(IPv4Address(0x0A000000 + i) for i in range(MAX_ADDRESSES_PER_OPTION))
    wire = VpnIpAddresses(3, addresses).encode()
    assert len(wire) == 252
    assert IPCP_OPTIONS.decode(wire) == (VpnIpAddresses(3, addresses),)


def test_vpn_option_type_is_configurable() -> None:
    registry = ipcp_registry(vpn_option_type=0xF0)
    option = VpnIpAddresses(9, (_a("10.1.1.1"),), option_type=0xF0)
    assert registry.decode(option.encode()) == (option,)
    assert IPCP_OPTIONS.decode(option.encode()) == (UnknownOption(0xF0, option.encode_data()),)
    assert ipcp_registry(vpn_option_type=None).decode(VpnIpAddresses(1).encode())[0] == UnknownOption(
        DEFAULT_VPN_OPTION_TYPE, VpnIpAddresses(1).encode_data()
    )


def test_long_peer_lists_split_over_several_options() -> None:
    peers = {
        12: [IPv4Address(0x0A0C0000 + i) for i in range(130)],
        5: [_a("10.5.0.1")],
        8: [],
    }
    options = vpn_options_for(peers)
    assert [(o.vpn_id, len(o.addresses)) for o in options] == [(5, 1), (8, 0), (12, 61), (12, 61), (12, 8)]
    assert all(o.add for o in options)
    assert apply_vpn_options(options) == {k: frozenset(v) for k, v in peers.items()}
    assert encode_options(options)
    assert ConfigureNak(1, options).encode()[2:4] == (4 + sum(len(o.encode()) for o in options)).to_bytes(
        2, "big"
    )


def test_no_vpn_is_vpn_id_zero_with_no_addresses() -> None:
    assert vpn_options_for({}) == (VpnIpAddresses(0),)
    assert apply_vpn_options(vpn_options_for({})) == {}


def test_apply_is_ordered_and_additive_with_deletes() -> None:
    a, b, c = _a("10.0.0.1"), _a("10.0.0.2"), _a("10.0.0.3")
    options = [
        VpnIpAddresses(1, (a, b)),
        VpnIpAddresses(1, (c,)),
        VpnIpAddresses(1, (a,), add=False),
        VpnIpAddresses(2, (a,), add=False),
    ]
    assert apply_vpn_options(options) == {1: frozenset({b, c}), 2: frozenset()}


@given(st.dictionaries(st.integers(1, 2**32 - 1), st.lists(ps.ipv4_addresses, max_size=150, unique=True)))
def test_vpn_options_for_then_apply_is_identity(peers: dict[int, list[IPv4Address]]) -> None:
    options = vpn_options_for(peers)
    assert apply_vpn_options(options) == {k: frozenset(v) for k, v in peers.items()}
    assert IPCP_OPTIONS.decode(encode_options(options)) == options
