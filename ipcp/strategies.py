"""Hypothesis strategies for PPP values and hostile bytes, for users who fuzz this codec.

Importing this module needs ``hypothesis`` (the ``fuzz`` extra); nothing else in ``ipcp`` does.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import strategies as st

from ipcp.frame import Frame, is_valid_protocol
from ipcp.lcp_options import (
    AddressControlFieldCompression,
    AsyncControlCharacterMap,
    AuthenticationProtocol,
    MagicNumber,
    MaximumReceiveUnit,
    ProtocolFieldCompression,
    QualityProtocol,
)
from ipcp.option import MAX_OPTION_DATA, Option, UnknownOption
from ipcp.packet import (
    CodeReject,
    ConfigureAck,
    ConfigureNak,
    ConfigureReject,
    ConfigureRequest,
    DiscardRequest,
    EchoReply,
    EchoRequest,
    Packet,
    ProtocolReject,
    TerminateAck,
    TerminateRequest,
    UnknownCodePacket,
)
from ipcp.rfc1332 import IpAddress, IpAddresses, IpCompressionProtocol
from ipcp.rfc1877 import PrimaryDns, PrimaryNbns, SecondaryDns, SecondaryNbns
from ipcp.vpn_option import DEFAULT_VPN_OPTION_TYPE, MAX_ADDRESSES_PER_OPTION, VpnIpAddresses

__all__ = [
    "frames",
    "hostile_bytes",
    "ipcp_options",
    "ipv4_addresses",
    "lcp_options",
    "lcp_packets",
    "ncp_packets",
    "unknown_options",
    "vpn_ip_addresses",
]

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4_addresses = st.builds(IPv4Address, u32)


def unknown_options(excluded: frozenset[int] = frozenset()) -> st.SearchStrategy[UnknownOption]:
    """Options of types not in ``excluded`` (pass a registry's known types) with arbitrary data."""
    return st.builds(
        UnknownOption,
        u8.filter(lambda t: t not in excluded),
        st.binary(max_size=MAX_OPTION_DATA),
    )


lcp_known_options: st.SearchStrategy[Option] = st.one_of(
    st.builds(MaximumReceiveUnit, u16),
    st.builds(AsyncControlCharacterMap, u32),
    st.builds(AuthenticationProtocol, u16, st.binary(max_size=20)),
    st.builds(QualityProtocol, u16, st.binary(max_size=20)),
    st.builds(MagicNumber, u32),
    st.just(ProtocolFieldCompression()),
    st.just(AddressControlFieldCompression()),
)
lcp_options: st.SearchStrategy[Option] = st.one_of(
    lcp_known_options, unknown_options(frozenset({1, 2, 3, 4, 5, 7, 8}))
)


def vpn_ip_addresses(option_type: int = DEFAULT_VPN_OPTION_TYPE) -> st.SearchStrategy[VpnIpAddresses]:
    return st.builds(
        VpnIpAddresses,
        vpn_id=u32,
        addresses=st.lists(ipv4_addresses, max_size=MAX_ADDRESSES_PER_OPTION).map(tuple),
        add=st.booleans(),
        reserved=st.integers(0, 0x7FFF),
        option_type=st.just(option_type),
    )


ipcp_known_options: st.SearchStrategy[Option] = st.one_of(
    st.builds(IpAddresses, ipv4_addresses, ipv4_addresses),
    st.builds(IpCompressionProtocol, u16, st.binary(max_size=20)),
    st.builds(IpAddress, ipv4_addresses),
    st.builds(PrimaryDns, ipv4_addresses),
    st.builds(PrimaryNbns, ipv4_addresses),
    st.builds(SecondaryDns, ipv4_addresses),
    st.builds(SecondaryNbns, ipv4_addresses),
    vpn_ip_addresses(),
)
ipcp_options: st.SearchStrategy[Option] = st.one_of(
    ipcp_known_options,
    unknown_options(frozenset({1, 2, 3, 129, 130, 131, 132, DEFAULT_VPN_OPTION_TYPE})),
)


def _packets(options: st.SearchStrategy[Option], lcp: bool) -> st.SearchStrategy[Packet]:
    option_lists = st.lists(options, max_size=8).map(tuple)
    blobs = st.binary(max_size=64)
    choices: list[st.SearchStrategy[Packet]] = [
        st.builds(cls, u8, option_lists)
        for cls in (ConfigureRequest, ConfigureAck, ConfigureNak, ConfigureReject)
    ]
    choices += [
        st.builds(TerminateRequest, u8, blobs),
        st.builds(TerminateAck, u8, blobs),
        st.builds(CodeReject, u8, blobs),
    ]
    if lcp:
        choices += [
            st.builds(ProtocolReject, u8, u16, blobs),
            st.builds(EchoRequest, u8, u32, blobs),
            st.builds(EchoReply, u8, u32, blobs),
            st.builds(DiscardRequest, u8, u32, blobs),
            st.builds(UnknownCodePacket, st.sampled_from([0, *range(12, 256)]), u8, blobs),
        ]
    else:
        choices.append(st.builds(UnknownCodePacket, st.sampled_from([0, *range(8, 256)]), u8, blobs))
    return st.one_of(choices)


lcp_packets = _packets(lcp_options, lcp=True)
ncp_packets = _packets(ipcp_options, lcp=False)

frames: st.SearchStrategy[Frame] = st.builds(Frame, u16.filter(is_valid_protocol), st.binary(max_size=200))


def hostile_bytes(max_size: int = 300) -> st.SearchStrategy[bytes]:
    """Random bytes biased towards PPP-looking prefixes (FF 03, C0 21, 80 21, small lengths)."""
    prefixes = st.sampled_from(
        [b"", b"\xff\x03", b"\xff\x03\xc0\x21", b"\xff\x03\x80\x21", b"\x80\x21", b"\x01"]
    )
    return st.builds(lambda p, b: p + b, prefixes, st.binary(max_size=max_size))
