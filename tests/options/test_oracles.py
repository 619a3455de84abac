"""Independent decoders agree with our codec on the same bytes: scapy, dpkt and tshark.

Each oracle is used in both directions where it can build packets: messages it builds decode
to the values it was given, and what our encoder produces parses, in the oracle, to the values
we encoded. tshark only reads, so our encodings go to it in a pcap, one run per batch. The
dhcpcd 9.4.1 captures go through all three. The strategies below are this module's own.

Oracle limits met on the way (theirs, not ours, and worked around here):
- scapy cannot encode an option instance longer than 255 octets (``struct.pack("!BB")``), so
  long options are handed to it as raw pre-split instances; it parses address lists per
  instance, so a list split at a non-multiple of 4 is only compared as raw bytes; it encodes
  option 2 (time offset) as unsigned.
- dpkt has no RFC 3396 concatenation and no option overload: instances are joined here.
- tshark dissects some codes (63, 81, 119, 123-125, 146, 158) strictly, so random payloads are
  only given to it under codes it shows as plain values; it nests overloaded ``file``/``sname``
  options under option 52, and shows realm/nonce information as text (compared as raw bytes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from oracle_helpers import (
    TsharkPacket,
    as_list,
    dhcpcd_vectors_dir,
    read_pcap_payloads,
    read_vectors,
    require_tshark,
    run_tshark,
    write_pcap,
)
from scapy.layers.dhcp import BOOTP, DHCP, DHCPOptions, DHCPRevOptions

from options import (
    DEFAULT_REGISTRY,
    DhcpMessage,
    EncodeError,
    MessageType,
    Options,
    decode_message,
    encode_message,
)
from options import rfc2132 as r
from options.rfc2132 import ClientIdentifier
from options.rfc3046 import RELAY_AGENT_INFORMATION, RelayAgentInformation, RelaySubOption
from options.rfc3118 import AUTHENTICATION, Authentication
from options.rfc6704 import FORCERENEW_NONCE_CAPABLE
from options.spec import OptionSpec
from options.vpn import PEER_CE, VPN_SERVERS, PeerCeBlock

pytestmark = pytest.mark.oracle

#: Big enough that nothing generated here needs option overload, except where a test asks for it.
ROOMY = 4096
_EXAMPLES = settings().max_examples  # the active hypothesis profile's budget (see conftest.py)

# ---------------------------------------------------------------------------------------------
# Strategies (this module's own; options.strategies is another test suite's)

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, (1 << 64) - 1)
ADDRESSES = st.builds(IPv4Address, U32)
TEXT = st.binary(min_size=1, max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))


def address_lists(max_size: int = 8) -> st.SearchStrategy[tuple[IPv4Address, ...]]:
    return st.lists(ADDRESSES, min_size=1, max_size=max_size).map(tuple)


def _sub_options(codes: st.SearchStrategy[int]) -> st.SearchStrategy[RelaySubOption]:
    def build(code: int, data: bytes, four: bytes) -> RelaySubOption:
        # RFC 3527 link selection and RFC 5107 server ID override are addresses.
        return RelaySubOption(code, four if code in (5, 11) else data)

    return st.builds(build, codes, st.binary(max_size=20), st.binary(min_size=4, max_size=4))


#: Sub-option codes tshark shows as plain values: circuit ID, remote ID and unassigned ones.
TSHARK_SUBOPTION_CODES = st.sampled_from([1, 2, *range(20, 150)])
RELAY_INFOS = st.lists(_sub_options(st.one_of(U8, TSHARK_SUBOPTION_CODES)), min_size=1, max_size=5).map(
    lambda subs: RelayAgentInformation(tuple(subs))
)
TSHARK_RELAY_INFOS = st.lists(_sub_options(TSHARK_SUBOPTION_CODES), min_size=1, max_size=5).map(
    lambda subs: RelayAgentInformation(tuple(subs))
)

_MAC = st.binary(min_size=16, max_size=16)
_SECRET = st.binary(min_size=4, max_size=4)


def _auth(protocol: int, algorithm: int, rdm: int, replay: int, info: bytes) -> Authentication:
    return Authentication(protocol, algorithm, rdm, replay, info)


AUTHENTICATIONS = st.one_of(
    # RFC 3118 section 4 configuration token
    st.builds(_auth, st.just(0), st.just(0), st.just(0), U64, st.binary(max_size=24)),
    # delayed: DISCOVER/INFORM form, or secret ID + MAC; now and then another algorithm or RDM
    st.builds(
        _auth, st.just(1), st.sampled_from([1, 1, 1, 2]), st.sampled_from([0, 0, 1]), U64, st.just(b"")
    ),
    st.builds(
        _auth,
        st.just(1),
        st.sampled_from([1, 1, 1, 7]),
        st.sampled_from([0, 0, 1]),
        U64,
        st.builds(bytes.__add__, _SECRET, _MAC),
    ),
    # dhcpcd delayedrealm: realm + secret ID + MAC
    st.builds(
        _auth,
        st.just(2),
        st.just(1),
        st.just(0),
        U64,
        st.builds(lambda realm, sid, mac: realm + sid + mac, st.binary(max_size=16), _SECRET, _MAC),
    ),
    # RFC 6704: type 1 nonce or type 2 HMAC
    st.builds(
        _auth,
        st.just(3),
        st.just(1),
        st.just(0),
        U64,
        st.builds(bytes.__add__, st.sampled_from([b"\x01", b"\x02"]), _MAC),
    ),
    # protocols nobody defined: kept as opaque information
    st.builds(_auth, st.integers(4, 255), U8, U8, U64, st.binary(max_size=20)),
)

PEER_CE_BLOCKS = st.lists(
    st.builds(PeerCeBlock, U32, st.booleans(), st.lists(ADDRESSES, max_size=5).map(tuple)),
    min_size=1,
    max_size=3,
).map(tuple)
LONG_PEER_CE_BLOCKS = st.lists(
    st.builds(PeerCeBlock, U32, st.booleans(), st.lists(ADDRESSES, min_size=40, max_size=90).map(tuple)),
    min_size=1,
    max_size=3,
).map(tuple)


# ---------------------------------------------------------------------------------------------
# The options compared typed: our spec, scapy's name for it, values, and scapy's form of a value.


@dataclass(frozen=True)
class Opt:
    spec: OptionSpec[Any]
    scapy_name: str | int  # an int where scapy does not know the code (it then gives raw bytes)
    values: st.SearchStrategy[Any]
    to_scapy: Callable[[Any], tuple[Any, ...]]
    from_scapy: Callable[[list[Any]], Any]  # scapy's values of every instance, in order

    def __repr__(self) -> str:
        return f"Opt({self.spec.name})"


def _one(values: list[Any]) -> Any:
    assert len(values) == 1, values
    return values[0]


def _addr(spec: OptionSpec[Any], name: str) -> Opt:
    return Opt(spec, name, ADDRESSES, lambda v: (str(v),), lambda vs: IPv4Address(_one(vs)))


def _addrs(spec: OptionSpec[Any], name: str) -> Opt:
    return Opt(
        spec,
        name,
        address_lists(),
        lambda v: tuple(str(a) for a in v),
        lambda vs: tuple(IPv4Address(a) for a in vs),
    )


def _int(spec: OptionSpec[Any], name: str, values: st.SearchStrategy[int]) -> Opt:
    return Opt(spec, name, values, lambda v: (v,), lambda vs: int(_one(vs)))


def _flag(spec: OptionSpec[Any], name: str) -> Opt:
    return Opt(spec, name, st.booleans(), lambda v: (int(v),), lambda vs: bool(_one(vs)))


def _text(spec: OptionSpec[Any], name: str) -> Opt:
    return Opt(
        spec,
        name,
        TEXT,
        lambda v: (v.encode("utf-8", "surrogateescape"),),
        lambda vs: b"".join(vs).decode("utf-8", "surrogateescape"),
    )


def _ints(spec: OptionSpec[Any], name: str) -> Opt:
    return Opt(
        spec,
        name,
        st.lists(U8, min_size=1, max_size=20).map(tuple),
        lambda v: (list(v),),
        lambda vs: tuple(x for chunk in vs for x in chunk),
    )


def _raw(spec: OptionSpec[Any], name: str | int, values: st.SearchStrategy[Any]) -> Opt:
    """Options scapy handles as opaque bytes; the value goes through our spec on both sides."""
    return Opt(spec, name, values, lambda v: (spec.encode(v),), lambda vs: spec.decode(b"".join(vs)))


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


STANDARD: tuple[Opt, ...] = (
    _addr(r.SUBNET_MASK, "subnet_mask"),
    Opt(
        r.TIME_OFFSET,
        "time_zone",
        st.integers(-(1 << 31), (1 << 31) - 1),
        lambda v: (v & 0xFFFFFFFF,),
        lambda vs: _signed32(_one(vs)),
    ),
    _addrs(r.ROUTER, "router"),
    _addrs(r.DOMAIN_NAME_SERVER, "name_server"),
    _text(r.HOST_NAME, "hostname"),
    _int(r.BOOT_FILE_SIZE, "boot-size", U16),
    _text(r.DOMAIN_NAME, "domain"),
    _flag(r.IP_FORWARDING, "ip-forwarding"),
    _int(r.MAX_DATAGRAM_REASSEMBLY, "max_dgram_reass_size", st.integers(576, 0xFFFF)),
    _int(r.DEFAULT_IP_TTL, "default_ttl", st.integers(1, 0xFF)),
    _int(r.INTERFACE_MTU, "interface-mtu", st.integers(68, 0xFFFF)),
    _addr(r.BROADCAST_ADDRESS, "broadcast_address"),
    _int(r.ARP_CACHE_TIMEOUT, "arp_cache_timeout", U32),
    _addrs(r.NTP_SERVERS, "NTP_server"),
    _raw(r.VENDOR_SPECIFIC, "vendor_specific", st.binary(min_size=1, max_size=60)),
    _int(r.NETBIOS_NODE_TYPE, "NetBIOS_node_type", U8),
    _addr(r.REQUESTED_IP_ADDRESS, "requested_addr"),
    _int(r.IP_ADDRESS_LEASE_TIME, "lease_time", U32),
    _addr(r.SERVER_IDENTIFIER, "server_id"),
    _ints(r.PARAMETER_REQUEST_LIST, "param_req_list"),
    _text(r.MESSAGE, "error_message"),
    _int(r.MAXIMUM_MESSAGE_SIZE, "max_dhcp_size", st.integers(576, 0xFFFF)),
    _int(r.RENEWAL_TIME, "renewal_time", U32),
    _int(r.REBINDING_TIME, "rebinding_time", U32),
    _raw(r.VENDOR_CLASS_IDENTIFIER, "vendor_class_id", st.binary(min_size=1, max_size=40)),
    _raw(
        r.CLIENT_IDENTIFIER, "client_id", st.builds(ClientIdentifier, U8, st.binary(min_size=1, max_size=20))
    ),
    _raw(RELAY_AGENT_INFORMATION, "relay_agent_information", RELAY_INFOS),
    _raw(AUTHENTICATION, 90, AUTHENTICATIONS),
    _ints(FORCERENEW_NONCE_CAPABLE, "forcerenew_nonce_capable"),
    _raw(PEER_CE, PEER_CE.code, PEER_CE_BLOCKS),
    _raw(VPN_SERVERS, VPN_SERVERS.code, address_lists()),
)
BY_CODE = {o.spec.code: o for o in STANDARD}
#: tshark reads a type-255 client identifier as RFC 4361 IAID + DUID and stops dissecting the
#: message when that structure is short or its DUID malformed; our codec keeps any identifier.
TSHARK_CLIENT_IDS = st.builds(ClientIdentifier, st.integers(0, 254), st.binary(min_size=1, max_size=20))
_TSHARK_OVERRIDES = {
    82: _raw(RELAY_AGENT_INFORMATION, "relay_agent_information", TSHARK_RELAY_INFOS),
    61: _raw(r.CLIENT_IDENTIFIER, "client_id", TSHARK_CLIENT_IDS),
}
TSHARK_STANDARD = tuple(_TSHARK_OVERRIDES.get(o.spec.code, o) for o in STANDARD)
#: Options longer than one instance (RFC 3396): opaque to scapy, so it sees each instance's bytes.
LONG: tuple[Opt, ...] = (
    _raw(r.VENDOR_SPECIFIC, "vendor_specific", st.binary(min_size=256, max_size=700)),
    _raw(PEER_CE, PEER_CE.code, LONG_PEER_CE_BLOCKS),
    _raw(VPN_SERVERS, VPN_SERVERS.code, address_lists(200).filter(lambda a: len(a) > 64)),
)

_UNKNOWN = [c for c in range(1, 255) if c not in DEFAULT_REGISTRY]
#: Codes we do not know that scapy keeps as bytes too.
SCAPY_RAW_CODES = [c for c in _UNKNOWN if c not in DHCPOptions or isinstance(DHCPOptions[c], str)]
#: Unknown-to-us codes tshark 4.0 dissects (a 4-octet probe under each showed sub-fields; 119 too).
#: Random bytes that break their RFCs make tshark stop dissecting the rest of the message, so
#: random payloads only go under the codes it shows as plain values.
TSHARK_STRICT_CODES = frozenset(
    {63, 77, 78, 79, 81, 83, 85, 86, 87, 91, 92, 93, 94, 99, 100, 101, 112, 113, 114, 116, 117, 118}
    | {119, 120, 121, 122, 123, 124, 125, 136, 137, 138, 142, 146, 150, 151, 152, 153, 154, 155, 156}
    | {157, 158, 159, 160, 161, 209, 210, 212, 242, 249, 252}
)
TSHARK_RAW_CODES = [c for c in _UNKNOWN if c not in TSHARK_STRICT_CODES]


@dataclass(frozen=True)
class Case:
    """A message and how it was made: typed options (via :class:`Opt`) and opaque ones."""

    message: DhcpMessage
    message_type: MessageType
    typed: tuple[tuple[Opt, Any], ...]
    raw: tuple[tuple[int, bytes], ...]


@st.composite
def headers(draw: st.DrawFn, *, plain_fields: bool = False) -> dict[str, Any]:
    hlen = draw(st.sampled_from([6, 6, 6, 0, 8, 16]))
    blank = st.just(b"")
    return {
        "op": draw(st.sampled_from([1, 2])),
        "htype": 1 if hlen == 6 else draw(st.sampled_from([1, 6, 32])),
        "hlen": hlen,
        "hops": draw(U8),
        "xid": draw(U32),
        "secs": draw(U16),
        "flags": draw(U16),
        "ciaddr": draw(ADDRESSES),
        "yiaddr": draw(ADDRESSES),
        "siaddr": draw(ADDRESSES),
        "giaddr": draw(ADDRESSES),
        "chaddr": draw(st.binary(min_size=hlen, max_size=hlen)).ljust(16, b"\0"),
        # Full-width fields, as a decoder returns them; blank ones leave room for overload.
        "sname": draw(blank if plain_fields else st.one_of(blank, st.binary(max_size=64))).ljust(64, b"\0"),
        "file": draw(blank if plain_fields else st.one_of(blank, st.binary(max_size=128))).ljust(128, b"\0"),
    }


@st.composite
def cases(
    draw: st.DrawFn,
    table: tuple[Opt, ...] = STANDARD,
    raw_codes: list[int] | None = None,
    long: tuple[Opt, ...] = (),
    plain_fields: bool = False,
) -> Case:
    message_type = draw(st.sampled_from(MessageType))
    chosen = list(draw(st.lists(st.sampled_from(table), max_size=8, unique_by=lambda o: o.spec.code)))
    if long and draw(st.booleans()) is True:
        extra = draw(st.sampled_from(long))
        chosen = [*(o for o in chosen if o.spec.code != extra.spec.code), extra]
    chosen = draw(st.permutations(chosen))
    typed = tuple((o, draw(o.values)) for o in chosen)
    raw: tuple[tuple[int, bytes], ...] = ()
    if raw_codes:
        raw = tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(raw_codes), st.binary(max_size=30)),
                    max_size=3,
                    unique_by=lambda item: item[0],
                )
            )
        )
    options = Options([r.MESSAGE_TYPE.item(message_type), *(o.spec.item(v) for o, v in typed), *raw])
    message = DhcpMessage(**draw(headers(plain_fields=plain_fields)), options=options)
    return Case(message, message_type, typed, raw)


def split_points(draw: st.DrawFn, payload: bytes) -> list[bytes]:
    """Cut ``payload`` into instance-sized pieces (1..255 octets) at random places."""
    pieces: list[bytes] = []
    rest = payload
    while rest:
        size = draw(st.integers(1, min(255, len(rest))))
        pieces.append(rest[:size])
        rest = rest[size:]
    return pieces or [b""]


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _encode(message: DhcpMessage, max_payload: int = ROOMY) -> bytes:
    return encode_message(message, max_payload=max_payload)


# ---------------------------------------------------------------------------------------------
# scapy


def scapy_packet(case: Case, instances: Iterable[bytes | tuple[Any, ...]] | None = None) -> Any:
    """``case`` built by scapy; ``instances`` replaces the option list (raw bytes are sent verbatim)."""
    m = case.message
    if instances is None:
        instances = [
            ("message-type", int(case.message_type)),
            *((o.scapy_name, *o.to_scapy(v)) for o, v in case.typed),
            *case.raw,
        ]
    return BOOTP(
        op=m.op,
        htype=m.htype,
        hlen=m.hlen,
        hops=m.hops,
        xid=m.xid,
        secs=m.secs,
        flags=m.flags,
        ciaddr=str(m.ciaddr),
        yiaddr=str(m.yiaddr),
        siaddr=str(m.siaddr),
        giaddr=str(m.giaddr),
        chaddr=m.chaddr,
        sname=m.sname,
        file=m.file,
    ) / DHCP(options=[*instances, "end"])


def scapy_view(wire: bytes) -> tuple[Any, dict[int, list[Any]]]:
    """scapy's parse of ``wire`` and its option values by code, instances concatenated."""
    pkt = BOOTP(wire)
    assert pkt.haslayer(DHCP), "scapy found no DHCP options (magic cookie?)"
    grouped: dict[int, list[Any]] = {}
    for entry in pkt[DHCP].options:
        if entry in ("end", "pad"):
            continue
        assert isinstance(entry, tuple), f"scapy could not parse the options from {bytes(entry).hex()}"
        name = entry[0]
        code = name if isinstance(name, int) else DHCPRevOptions[name][0]
        grouped.setdefault(code, []).extend(entry[1:])
    return pkt, grouped


def assert_scapy_header(pkt: Any, m: DhcpMessage) -> None:
    assert (pkt.op, pkt.htype, pkt.hlen, pkt.hops, pkt.xid, pkt.secs, int(pkt.flags)) == (
        m.op,
        m.htype,
        m.hlen,
        m.hops,
        m.xid,
        m.secs,
        m.flags,
    )
    assert [pkt.ciaddr, pkt.yiaddr, pkt.siaddr, pkt.giaddr] == [
        str(m.ciaddr),
        str(m.yiaddr),
        str(m.siaddr),
        str(m.giaddr),
    ]
    assert bytes(pkt.chaddr) == m.chaddr.ljust(16, b"\0")
    assert (bytes(pkt.sname), bytes(pkt.file)) == (m.sname.ljust(64, b"\0"), m.file.ljust(128, b"\0"))


def assert_scapy_options(grouped: dict[int, list[Any]], msg: DhcpMessage) -> None:
    """scapy's typed values equal ours for every option in :data:`STANDARD`; the rest byte for byte."""
    assert list(grouped) == list(msg.options)
    for code, values in grouped.items():
        if code == r.MESSAGE_TYPE.code:
            assert MessageType(_one(values)) is msg.message_type
        elif code in BY_CODE:
            assert BY_CODE[code].from_scapy(values) == msg.options.value(BY_CODE[code].spec), code
        else:
            assert b"".join(values) == msg.options[code], code


@given(case=cases(raw_codes=SCAPY_RAW_CODES))
@settings(deadline=None)
def test_scapy_built_messages_decode_to_the_same_values(case: Case) -> None:
    msg = decode_message(bytes(scapy_packet(case)))
    assert msg == case.message
    assert msg.message_type is case.message_type
    for opt, value in case.typed:
        assert msg.options.value(opt.spec) == value, opt


@given(case=cases(raw_codes=SCAPY_RAW_CODES, long=LONG))
@settings(deadline=None)
def test_our_encoding_parses_to_the_same_values_in_scapy(case: Case) -> None:
    wire = _encode(case.message)
    assert wire[240] != 52  # no option 52 leading the options field: scapy knows no overload
    pkt, grouped = scapy_view(wire)
    assert_scapy_header(pkt, case.message)
    assert MessageType(_one(grouped.pop(r.MESSAGE_TYPE.code))) is case.message_type
    for opt, value in case.typed:
        assert opt.from_scapy(grouped.pop(opt.spec.code)) == value, opt
    for code, data in case.raw:
        assert b"".join(grouped.pop(code)) == data, code
    assert grouped == {}


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[Case, list[bytes | tuple[Any, ...]]]:
    """A case with one long typed option sent as raw instances cut at random, other options between."""
    case = draw(cases(table=(_addrs(r.ROUTER, "router"), *STANDARD[:2]), long=LONG))
    long_opt = next(
        ((o, v) for o, v in case.typed if len(o.spec.encode(v)) > 255),
        None,
    )
    if long_opt is None:
        routers = draw(address_lists(150).filter(lambda a: len(a) > 63))
        long_opt = (_addrs(r.ROUTER, "router"), routers)
        typed = (*((o, v) for o, v in case.typed if o.spec.code != r.ROUTER.code), long_opt)
        options = Options([r.MESSAGE_TYPE.item(case.message_type), *(o.spec.item(v) for o, v in typed)])
        case = Case(
            DhcpMessage(**{f: getattr(case.message, f) for f in _HEADER_FIELDS}, options=options),
            case.message_type,
            typed,
            (),
        )
    opt, value = long_opt
    pieces = [bytes((opt.spec.code, len(p))) + p for p in split_points(draw, opt.spec.encode(value))]
    others: list[bytes | tuple[Any, ...]] = [("message-type", int(case.message_type))]
    others += [(o.scapy_name, *o.to_scapy(v)) for o, v in case.typed if o is not opt]
    # Interleave: RFC 3396 does not require the instances of one option to be adjacent.
    instances: list[bytes | tuple[Any, ...]] = []
    for index, piece in enumerate(pieces):
        instances.append(piece)
        if index < len(others):
            instances.append(others[index])
    instances += others[len(pieces) :]
    return case, instances


_HEADER_FIELDS = (
    "op",
    "htype",
    "hlen",
    "hops",
    "xid",
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


@given(split=split_cases())
@settings(deadline=None)
def test_scapy_split_instances_decode_as_one_option(
    split: tuple[Case, list[bytes | tuple[Any, ...]]],
) -> None:
    case, instances = split
    msg = decode_message(bytes(scapy_packet(case, instances)))
    for opt, value in case.typed:
        assert msg.options.value(opt.spec) == value, opt
    assert msg.options == case.message.options


# ---------------------------------------------------------------------------------------------
# dpkt


def dpkt_view(wire: bytes) -> tuple[Any, dict[int, bytes]]:
    pkt: Any = dpkt.dhcp.DHCP(wire)
    grouped: dict[int, bytes] = {}
    for code, data in pkt.opts:
        grouped[code] = grouped.get(code, b"") + bytes(data)
    return pkt, grouped


@given(case=cases(raw_codes=_UNKNOWN, long=LONG), data=st.data())
@settings(deadline=None)
def test_dpkt_built_messages_decode_to_the_same_values(case: Case, data: st.DataObject) -> None:
    m = case.message
    opts = [(code, piece) for code, payload in m.options.items() for piece in data.draw(_pieces(payload))]
    pkt: Any = dpkt.dhcp.DHCP(
        op=m.op,
        hrd=m.htype,
        hln=m.hlen,
        hops=m.hops,
        xid=m.xid,
        secs=m.secs,
        flags=m.flags,
        ciaddr=int(m.ciaddr),
        yiaddr=int(m.yiaddr),
        siaddr=int(m.siaddr),
        giaddr=int(m.giaddr),
        chaddr=m.chaddr,
        sname=m.sname,
        file=m.file,
        opts=opts,
    )
    msg = decode_message(bytes(pkt))
    assert msg == m
    for opt, value in case.typed:
        assert msg.options.value(opt.spec) == value, opt


def _pieces(payload: bytes) -> st.SearchStrategy[list[bytes]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[bytes]:
        return split_points(draw, payload)

    return build()


@given(case=cases(raw_codes=_UNKNOWN, long=LONG))
@settings(deadline=None)
def test_our_encoding_parses_to_the_same_values_in_dpkt(case: Case) -> None:
    m = case.message
    wire = _encode(m)
    pkt, grouped = dpkt_view(wire)
    assert (pkt.op, pkt.hrd, pkt.hln, pkt.hops, pkt.xid, pkt.secs, pkt.flags) == (
        m.op,
        m.htype,
        m.hlen,
        m.hops,
        m.xid,
        m.secs,
        m.flags,
    )
    assert [pkt.ciaddr, pkt.yiaddr, pkt.siaddr, pkt.giaddr] == [
        int(m.ciaddr),
        int(m.yiaddr),
        int(m.siaddr),
        int(m.giaddr),
    ]
    assert bytes(pkt.chaddr) == m.hardware_address
    assert (bytes(pkt.sname), bytes(pkt.file)) == (m.sname, m.file)
    assert pkt.magic == 0x63825363
    assert grouped == dict(m.options)
    assert list(grouped) == list(m.options)  # first-seen order kept
    # After END, only padding: dpkt leaves it as the packet's data.
    assert bytes(pkt.data) == bytes(len(pkt.data))
    assert len(wire) >= 300  # BOOTP's minimum, which relays expect


# ---------------------------------------------------------------------------------------------
# tshark


_TSHARK_SCALARS: tuple[tuple[OptionSpec[Any], str], ...] = (
    (r.SUBNET_MASK, "dhcp.option.subnet_mask"),
    (r.SERVER_IDENTIFIER, "dhcp.option.dhcp_server_id"),
    (r.IP_ADDRESS_LEASE_TIME, "dhcp.option.ip_address_lease_time"),
)
_TSHARK_LISTS: tuple[tuple[OptionSpec[tuple[IPv4Address, ...]], str], ...] = (
    (r.ROUTER, "dhcp.option.router"),
    (r.DOMAIN_NAME_SERVER, "dhcp.option.domain_name_server"),
)


def tshark_disagreements(seen: TsharkPacket | None, msg: DhcpMessage) -> list[str]:
    """Every way tshark's dissection of ``msg.wire`` differs from our decode (empty: agreement)."""
    if seen is None:
        return ["tshark found no DHCP layer"]
    out: list[str] = []

    def check(what: str, theirs: Any, ours: Any) -> None:
        if theirs != ours:
            out.append(f"{what}: tshark {theirs!r}, ours {ours!r}")

    h = seen.header
    check("op", h.get("dhcp.type"), str(msg.op))
    check("htype", h.get("dhcp.hw.type"), f"0x{msg.htype:02x}")
    check("hlen", h.get("dhcp.hw.len"), str(msg.hlen))
    check("hops", h.get("dhcp.hops"), str(msg.hops))
    check("xid", h.get("dhcp.id"), f"0x{msg.xid:08x}")
    if _mentions(seen.layer, "dhcp.secs_le"):
        # tshark guesses that secs is little-endian when the low octet is 0 and says so.
        check(
            "secs (tshark read little-endian)",
            h.get("dhcp.secs"),
            str(int.from_bytes(msg.secs.to_bytes(2, "little"))),
        )
    else:
        check("secs", h.get("dhcp.secs"), str(msg.secs))
    check("flags", h.get("dhcp.flags"), f"0x{msg.flags:04x}")
    check("ciaddr", h.get("dhcp.ip.client"), str(msg.ciaddr))
    check("yiaddr", h.get("dhcp.ip.your"), str(msg.yiaddr))
    check("siaddr", h.get("dhcp.ip.server"), str(msg.siaddr))
    check("giaddr", h.get("dhcp.ip.relay"), str(msg.giaddr))
    if msg.htype == 1 and msg.hlen == 6:
        check("client MAC", h.get("dhcp.hw.mac_addr"), _colon_hex(msg.chaddr[:6]))
    elif msg.hlen:
        # tshark shows the whole 16-octet field when it is not an Ethernet address.
        check("chaddr", h.get("dhcp.hw.addr"), _colon_hex(msg.chaddr))

    # Every option, byte for byte, with RFC 3396 concatenation and overload applied. We consume
    # option 52 as framing (it is not in the decoded options); tshark lists it: check it names
    # every field tshark found options in.
    payloads = seen.payloads()
    overload = payloads.pop(52, None)
    check("option payloads", payloads, dict(msg.options))
    areas = {o.area for o in seen.options} - {"options"}
    if overload is not None or areas:
        flags = overload[0] if overload is not None and len(overload) == 1 else 0
        needed = (1 if "file" in areas else 0) | (2 if "sname" in areas else 0)
        check("option 52 covers the overloaded fields", flags & needed, needed)

    def field(code: int, name: str) -> list[Any]:
        return [v for o in seen.instances(code) for v in as_list(o.field(name))]

    mtype = msg.message_type
    if mtype is not None:
        check("message type", field(53, "dhcp.option.dhcp"), [str(int(mtype))])
    for spec, name in _TSHARK_SCALARS:
        value = msg.options.get_value(spec)
        if value is not None:
            check(spec.name, field(spec.code, name), [str(value)])
    for list_spec, name in _TSHARK_LISTS:
        addresses = msg.options.get_value(list_spec)
        # Typed only when in one instance: tshark reads each instance's addresses alone.
        if addresses is not None and len(seen.instances(list_spec.code)) == 1:
            check(list_spec.name, field(list_spec.code, name), [str(a) for a in addresses])
    relay = msg.options.get_value(RELAY_AGENT_INFORMATION)
    if relay is not None and len(seen.instances(82)) == 1:
        out += _relay_disagreements(seen.instances(82)[0].fields, relay)
    auth = msg.options.get_value(AUTHENTICATION)
    if auth is not None:
        out += _auth_disagreements(seen.instances(90)[0].fields, auth, mtype)
    return out


def _mentions(node: Any, key: str) -> bool:
    """Whether ``key`` appears anywhere in a tshark JSON subtree (expert infos nest deeply)."""
    if isinstance(node, dict):
        return key in node or any(_mentions(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, key) for v in node)
    return False


def _raw_of(fields: dict[str, Any], name: str) -> bytes | None:
    raw = fields.get(name + "_raw")
    return None if raw is None else bytes.fromhex(raw[0])


def _relay_disagreements(fields: dict[str, Any], relay: RelayAgentInformation) -> list[str]:
    prefix = "dhcp.option.agent_information_option."
    codes = [int(c) for c in as_list(fields.get(prefix + "suboption"))]
    trees = as_list(fields.get(prefix + "suboption_tree"))
    out: list[str] = []
    if codes != [s.code for s in relay.suboptions]:
        return [f"option 82 sub-option codes: tshark {codes}, ours {[s.code for s in relay.suboptions]}"]
    for sub, tree in zip(relay.suboptions, trees, strict=True):
        if int(tree["dhcp.option.suboption_length"]) != len(sub.data):
            out.append(
                f"option 82 sub-option {sub.code} length: tshark {tree['dhcp.option.suboption_length']}"
            )
            continue
        if not sub.data:
            continue
        named = {1: "agent_circuit_id", 2: "agent_remote_id"}.get(sub.code, "value")
        theirs = _raw_of(tree, prefix + named)
        if theirs != sub.data:
            out.append(f"option 82 sub-option {sub.code} ({named}): tshark {theirs!r}, ours {sub.data!r}")
    # The two named accessors, as a user of our API reads them.
    if relay.circuit_id:
        circuit = [
            _raw_of(t, prefix + "agent_circuit_id") for t in trees if prefix + "agent_circuit_id_raw" in t
        ]
        if circuit[:1] != [relay.circuit_id]:
            out.append(f"circuit id: tshark {circuit!r}, ours {relay.circuit_id!r}")
    if relay.remote_id:
        remote = [
            _raw_of(t, prefix + "agent_remote_id") for t in trees if prefix + "agent_remote_id_raw" in t
        ]
        if remote[:1] != [relay.remote_id]:
            out.append(f"remote id: tshark {remote!r}, ours {relay.remote_id!r}")
    return out


def _auth_disagreements(
    fields: dict[str, Any], auth: Authentication, message_type: MessageType | None
) -> list[str]:
    prefix = "dhcp.option.dhcp_authentication."
    out: list[str] = []

    def check(what: str, theirs: Any, ours: Any) -> None:
        if theirs != ours:
            out.append(f"option 90 {what}: tshark {theirs!r}, ours {ours!r}")

    check("protocol", fields.get(prefix + "protocol"), str(auth.protocol))
    # tshark names the algorithm octet "Delay Algorithm" (alg_delay) for protocol 1 only.
    algorithm = fields.get(prefix + ("alg_delay" if auth.protocol == 1 else "algorithm"))
    check("algorithm", algorithm, str(auth.algorithm))
    check("rdm", fields.get(prefix + "rdm"), str(auth.rdm))
    if auth.rdm == 0:
        check(
            "replay detection", fields.get(prefix + "rdm_replay_detection"), f"0x{auth.replay_detection:016x}"
        )
    else:
        check(
            "replay detection", _raw_of(fields, prefix + "rdm_rdv"), auth.replay_detection.to_bytes(8, "big")
        )
    if auth.protocol == 1 and auth.algorithm == 1 and message_type is MessageType.DHCPDISCOVER:
        # tshark follows RFC 3118 5.2 (a DISCOVER carries no credentials) and stops after the
        # replay field; the raw option value is still compared with the other options.
        check("secret id in a DISCOVER", fields.get(prefix + "secret_id"), None)
    elif auth.protocol == 1 and auth.algorithm == 1 and auth.information:
        check("secret id", fields.get(prefix + "secret_id"), f"0x{auth.secret_id:08x}")
        check("HMAC", _raw_of(fields, prefix + "hmac_md5_hash"), auth.mac)
    elif auth.information:
        # Realm + secret ID + MAC, a nonce, a token: tshark shows text, so compare its bytes.
        check("information", _raw_of(fields, prefix + "information"), auth.information)
    return out


def tshark_check(wires: list[bytes]) -> list[str]:
    """Our decode of each payload against one tshark run over all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "batch.pcap"
        write_pcap(pcap, wires)
        seen = run_tshark(pcap)
    assert len(seen) == len(wires)
    problems: list[str] = []
    for index, (wire, packet) in enumerate(zip(wires, seen, strict=True)):
        problems += [
            f"frame {index + 1} ({wire.hex()}): {p}"
            for p in tshark_disagreements(packet, decode_message(wire))
        ]
    return problems


@pytest.fixture(scope="module")
def tshark() -> str:
    """tshark's path: the tests below skip without it, or fail under CI (see ``require_tshark``)."""
    return require_tshark()


@st.composite
def tshark_batches(draw: st.DrawFn) -> list[bytes]:
    """20-40 encodings, some at 548 octets so that long messages need option overload."""
    wires: list[bytes] = []
    for case in draw(
        st.lists(
            cases(table=TSHARK_STANDARD, raw_codes=TSHARK_RAW_CODES, long=LONG), min_size=20, max_size=40
        )
    ):
        size = draw(st.sampled_from([548, 548, ROOMY]))
        try:
            wires.append(_encode(case.message, size))
        except EncodeError:
            wires.append(_encode(case.message, ROOMY))
    return wires


@pytest.mark.usefixtures("tshark")
@given(batch=tshark_batches())
@settings(
    deadline=None,
    max_examples=max(4, _EXAMPLES // 50),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Each example is a tshark run: no shrinking (minutes); the failure lists each frame's hex.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
def test_tshark_agrees_with_our_encoding(batch: list[bytes]) -> None:
    assert tshark_check(batch) == []


@pytest.mark.usefixtures("tshark")
def test_tshark_agrees_on_option_overload() -> None:
    """A reply too big for 548 octets: options continue in ``file`` then ``sname`` (RFC 2131 4.1)."""
    options = Options(
        [
            r.MESSAGE_TYPE.item(MessageType.DHCPACK),
            r.SUBNET_MASK.item(IPv4Address("255.255.255.0")),
            r.ROUTER.item(tuple(IPv4Address(f"10.1.0.{i}") for i in range(1, 41))),
            r.DOMAIN_NAME_SERVER.item((IPv4Address("192.0.2.53"), IPv4Address("198.51.100.53"))),
            r.IP_ADDRESS_LEASE_TIME.item(86400),
            r.SERVER_IDENTIFIER.item(IPv4Address("10.1.0.1")),
            PEER_CE.item((PeerCeBlock(7, True, tuple(IPv4Address(f"172.16.{i}.1") for i in range(60))),)),
            AUTHENTICATION.item(Authentication.delayed(9, secret_id=0x1234)),
        ]
    )
    message = DhcpMessage(
        op=2, xid=0x01020304, yiaddr=IPv4Address("10.1.0.77"), chaddr=bytes(range(6)), options=options
    )
    wire = _encode(message, 548)
    assert wire[240:243] == b"\x34\x01\x03"  # option 52 first: both file and sname hold options
    assert decode_message(wire).options == options
    assert tshark_check([wire]) == []


@pytest.mark.usefixtures("tshark")
def test_overload_keeps_message_type_and_authentication_in_the_options_field() -> None:
    """``options.rfc3396.UNSPLITTABLE``: 52, 53 and 90 "must travel as one instance in the options field".

    A realistic signed ACK: message type, server ID, lease, a 70-peer Peer-CE list, and option
    90 last (it is signed last). At 548 octets the Peer-CE list fills the options field, and
    option 90 must still be there: decoders without overload support (dpkt reads only the
    options field) would otherwise see an unauthenticated message. tshark, which follows
    overload, reports which field each instance sits in.
    """
    options = Options(
        [
            r.MESSAGE_TYPE.item(MessageType.DHCPACK),
            r.SERVER_IDENTIFIER.item(IPv4Address("10.0.0.1")),
            r.IP_ADDRESS_LEASE_TIME.item(3600),
            PEER_CE.item((PeerCeBlock(7, True, tuple(IPv4Address(f"172.16.0.{i}") for i in range(1, 71))),)),
            AUTHENTICATION.item(Authentication.delayed(1, secret_id=0x1234)),
        ]
    )
    message = DhcpMessage(op=2, xid=1, yiaddr=IPv4Address("10.0.0.5"), chaddr=bytes(6), options=options)
    wire = _encode(message, 548)
    assert decode_message(wire).options == options
    assert tshark_check([wire]) == []
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "overload.pcap"
        write_pcap(pcap, [wire])
        (seen,) = run_tshark(pcap)
    assert seen is not None
    areas = {o.code: o.area for o in seen.options if o.code in (52, 53, 90)}
    _, options_field = dpkt_view(wire)
    assert areas == {52: "options", 53: "options", 90: "options"}, wire.hex()
    assert {52, 53, 90} <= set(options_field), wire.hex()


# ---------------------------------------------------------------------------------------------
# The dhcpcd 9.4.1 payloads through all three oracles


def _dhcpcd_payloads() -> list[tuple[str, bytes]]:
    directory = dhcpcd_vectors_dir()
    out = [
        (v.name, v.payload) for path in sorted(directory.glob("*.vectors.txt")) for v in read_vectors(path)
    ]
    out += [
        (c.name, c.payload) for pcap in sorted(directory.glob("*.pcap")) for c in read_pcap_payloads(pcap)
    ]
    assert len(out) > 40
    return out


def test_dhcpcd_payloads_agree_with_scapy() -> None:
    for name, payload in _dhcpcd_payloads():
        msg = decode_message(payload)
        pkt, grouped = scapy_view(payload)
        assert_scapy_header(pkt, msg)
        assert set(grouped) <= set(BY_CODE) | {53}, name  # every option compared typed
        assert_scapy_options(grouped, msg)


def test_dhcpcd_payloads_agree_with_dpkt() -> None:
    for name, payload in _dhcpcd_payloads():
        msg = decode_message(payload)
        pkt, grouped = dpkt_view(payload)
        assert (pkt.op, pkt.xid, pkt.flags, pkt.yiaddr, pkt.ciaddr) == (
            msg.op,
            msg.xid,
            msg.flags,
            int(msg.yiaddr),
            int(msg.ciaddr),
        ), name
        assert bytes(pkt.chaddr) == msg.hardware_address, name
        assert grouped == dict(msg.options), name
        assert bytes(pkt.data) == bytes(len(pkt.data)), name


@pytest.mark.usefixtures("tshark")
def test_dhcpcd_payloads_agree_with_tshark() -> None:
    payloads = _dhcpcd_payloads()
    assert tshark_check([p for _, p in payloads]) == []
