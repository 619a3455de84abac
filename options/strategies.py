"""Hypothesis strategies for DHCP values, messages and hostile bytes.

For users who fuzz their own DHCP software with this codec's encodings, and for this
project's property tests. Values are valid by construction: every one encodes, and the
encoding decodes back to it. Importing this module needs ``hypothesis`` (the ``fuzz``
extra); nothing else in ``options`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any, Final, TypeVar, cast

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "options.strategies needs hypothesis; install the 'fuzz' extra: pip install 'ce-autoconf[fuzz]'"
    ) from exc

from options.errors import DecodeError, EncodeError
from options.message import MAX_MESSAGE_SIZE, DhcpMessage, Options, encode_message
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.rfc2132 import CLIENT_IDENTIFIER, ClientIdentifier
from options.rfc3046 import RelayAgentInformation, RelayAgentInformationSpec, RelaySubOption
from options.rfc3118 import MAC_SIZE, Authentication, AuthenticationSpec, AuthProtocol
from options.rfc3396 import scan_field
from options.spec import (
    AddressListSpec,
    AddressPairListSpec,
    AddressSpec,
    BytesSpec,
    EnumSpec,
    FlagSpec,
    IntListSpec,
    IntSpec,
    OptionSpec,
    TextSpec,
)
from options.vpn import MAX_PEERS_PER_BLOCK, PeerCeBlock, PeerCeSpec

__all__ = [
    "address_lists",
    "address_pair_lists",
    "authentications",
    "byte_values",
    "client_identifiers",
    "encoded_messages",
    "enum_values",
    "flags",
    "hostile_bytes",
    "int_lists",
    "int_values",
    "ipv4_addresses",
    "messages",
    "option_values",
    "options_maps",
    "peer_ce_blocks",
    "peer_ce_values",
    "relay_agent_information",
    "text_values",
    "unknown_payloads",
]

T = TypeVar("T")

_FIXED: Final = 240
#: Sizes a sender is commonly asked to fit: RFC 2131's minimum, Ethernet, jumbo, the UDP maximum.
_MAX_PAYLOADS: Final = (576 - 28, 1500 - 28, 8192 - 28, MAX_MESSAGE_SIZE)


def ipv4_addresses() -> st.SearchStrategy[IPv4Address]:
    """Any IPv4 address, with the all-zeros and all-ones ones drawn often."""
    return st.one_of(
        st.sampled_from((IPv4Address(0), IPv4Address(0xFFFFFFFF))),
        st.integers(0, 0xFFFFFFFF).map(IPv4Address),
    )


def address_lists(min_count: int = 1, max_count: int = 80) -> st.SearchStrategy[tuple[IPv4Address, ...]]:
    """Address lists; the default maximum (320 octets) crosses RFC 3396's 255-octet split."""
    return st.lists(ipv4_addresses(), min_size=min_count, max_size=max(min_count, max_count)).map(tuple)


def address_pair_lists(
    max_count: int = 40,
) -> st.SearchStrategy[tuple[tuple[IPv4Address, IPv4Address], ...]]:
    """Non-empty lists of address pairs (policy filter, static routes)."""
    pair = st.tuples(ipv4_addresses(), ipv4_addresses())
    return st.lists(pair, min_size=1, max_size=max_count).map(tuple)


def int_values(spec: IntSpec) -> st.SearchStrategy[int]:
    """Integers in ``spec``'s range, from its RFC minimum to its size's maximum."""
    return st.integers(spec.minimum, spec.maximum)


def int_lists(spec: IntListSpec, max_count: int = 64) -> st.SearchStrategy[tuple[int, ...]]:
    """Lists of 8- or 16-bit integers with at least ``spec.min_count`` items."""
    item = st.integers(0, (1 << (8 * spec.size)) - 1)
    return st.lists(item, min_size=spec.min_count, max_size=max(spec.min_count, max_count)).map(tuple)


def flags() -> st.SearchStrategy[bool]:
    """RFC 2132 boolean options."""
    return st.booleans()


def text_values(min_length: int = 1, max_length: int = 300) -> st.SearchStrategy[str]:
    """Text as the decoder returns it: ASCII, UTF-8, or any bytes as surrogate escapes."""
    ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=min_length)
    raw = st.binary(min_size=min_length, max_size=max(min_length, max_length))
    return st.one_of(
        ascii_text.filter(lambda s: len(s) <= max_length),
        raw.map(lambda b: b.decode("utf-8", "surrogateescape")),
    )


def byte_values(min_length: int = 1, max_length: int = 300) -> st.SearchStrategy[bytes]:
    """Opaque octets."""
    return st.binary(min_size=min_length, max_size=max(min_length, max_length))


def enum_values(spec: EnumSpec[Any]) -> st.SearchStrategy[IntEnum]:
    """Members of ``spec``'s enumeration, found through its public decoder."""
    members: list[IntEnum] = []
    for value in range(256):
        try:
            members.append(spec.decode(bytes((value,))))
        except DecodeError:
            continue
    return st.sampled_from(members)


def client_identifiers() -> st.SearchStrategy[ClientIdentifier]:
    """Option 61: mostly Ethernet (type 1, 6 octets), else any type and identifier."""
    ethernet = st.binary(min_size=6, max_size=6).map(lambda mac: ClientIdentifier(1, mac))
    anything = st.builds(ClientIdentifier, st.integers(0, 255), st.binary(min_size=1, max_size=64))
    return st.one_of(ethernet, anything)


def _relay_suboptions() -> st.SearchStrategy[RelaySubOption]:
    address_codes = st.sampled_from((5, 11))
    other_codes = st.integers(0, 255).filter(lambda c: c not in (5, 11))
    return st.one_of(
        st.builds(RelaySubOption, address_codes, ipv4_addresses().map(lambda a: a.packed)),
        st.builds(RelaySubOption, other_codes, st.binary(max_size=48)),
    )


def relay_agent_information() -> st.SearchStrategy[RelayAgentInformation]:
    """Option 82: one or more sub-options, in any order, repeats allowed."""
    return st.lists(_relay_suboptions(), min_size=1, max_size=8).map(
        lambda subs: RelayAgentInformation(tuple(subs))
    )


@st.composite
def _authentication(draw: st.DrawFn) -> Authentication:
    protocol = draw(st.sampled_from((*AuthProtocol, 4, 255)))
    algorithm = draw(st.one_of(st.just(1), st.integers(0, 255)))
    rdm = draw(st.one_of(st.just(0), st.integers(0, 255)))
    replay = draw(st.integers(0, (1 << 64) - 1))
    credentials = st.binary(min_size=4 + MAC_SIZE, max_size=4 + MAC_SIZE)
    if protocol == AuthProtocol.DELAYED:
        info = draw(st.one_of(st.just(b""), credentials))
    elif protocol == AuthProtocol.DELAYED_REALM:
        realm_and_credentials = st.tuples(st.binary(max_size=128), credentials).map(lambda rc: rc[0] + rc[1])
        info = draw(st.one_of(st.just(b""), realm_and_credentials))
    elif protocol == AuthProtocol.RECONFIGURE_KEY:
        info = bytes((draw(st.sampled_from((1, 2))),)) + draw(st.binary(min_size=16, max_size=16))
    else:
        info = draw(st.binary(max_size=255 - 11))
    return Authentication(protocol, algorithm, rdm, replay, info)


def authentications() -> st.SearchStrategy[Authentication]:
    """Option 90 in every protocol's valid shape: token, delayed (with or without realm), RFC 6704, others."""
    return _authentication()


def peer_ce_blocks(max_peers: int = MAX_PEERS_PER_BLOCK) -> st.SearchStrategy[PeerCeBlock]:
    """One Peer-CE block: add or delete, none to ``max_peers`` peers."""
    return st.builds(
        PeerCeBlock,
        st.integers(0, 0xFFFFFFFF),
        st.booleans(),
        st.lists(ipv4_addresses(), max_size=min(max_peers, MAX_PEERS_PER_BLOCK)).map(tuple),
    )


def peer_ce_values(max_blocks: int = 6) -> st.SearchStrategy[tuple[PeerCeBlock, ...]]:
    """A Peer-CE option value: one or more blocks."""
    return st.lists(peer_ce_blocks(), min_size=1, max_size=max_blocks).map(tuple)


def unknown_payloads(max_length: int = 600) -> st.SearchStrategy[bytes]:
    """Payloads for options the registry does not know: empty, short, or long enough to split."""
    return st.one_of(st.binary(max_size=40), st.binary(min_size=250, max_size=max_length))


def option_values(spec: OptionSpec[T]) -> st.SearchStrategy[T]:
    """Valid values for ``spec``: one strategy per kind of spec in :data:`options.DEFAULT_REGISTRY`.

    Raises ``TypeError`` for a spec kind it does not know.
    """
    strategy: st.SearchStrategy[Any]
    if isinstance(spec, AddressSpec):
        strategy = ipv4_addresses()
    elif isinstance(spec, AddressListSpec):
        strategy = address_lists(spec.min_count)
    elif isinstance(spec, AddressPairListSpec):
        strategy = address_pair_lists()
    elif isinstance(spec, IntSpec):
        strategy = int_values(spec)
    elif isinstance(spec, IntListSpec):
        strategy = int_lists(spec)
    elif isinstance(spec, FlagSpec):
        strategy = flags()
    elif isinstance(spec, TextSpec):
        strategy = text_values(spec.min_length)
    elif isinstance(spec, BytesSpec):
        strategy = byte_values(spec.min_length)
    elif isinstance(spec, EnumSpec):
        strategy = enum_values(spec)
    elif spec is CLIENT_IDENTIFIER:
        strategy = client_identifiers()
    elif isinstance(spec, RelayAgentInformationSpec):
        strategy = relay_agent_information()
    elif isinstance(spec, AuthenticationSpec):
        strategy = authentications()
    elif isinstance(spec, PeerCeSpec):
        strategy = peer_ce_values()
    else:
        raise TypeError(f"no value strategy for {spec!r}")
    return cast("st.SearchStrategy[T]", strategy)


@st.composite
def _options_map(draw: st.DrawFn, registry: OptionRegistry, max_known: int, max_unknown: int) -> Options:
    known = [spec for spec in registry if spec.code != 52]  # option 52 is the encoder's to choose
    specs = draw(st.lists(st.sampled_from(known), max_size=max_known, unique_by=lambda s: s.code))
    unknown_codes = [c for c in range(1, 255) if c not in registry]
    codes = draw(st.lists(st.sampled_from(unknown_codes), max_size=max_unknown, unique=True))
    items = [(spec.code, spec.encode(draw(option_values(spec)))) for spec in specs]
    items += [(code, draw(unknown_payloads())) for code in codes]
    return Options(draw(st.permutations(items)))


def options_maps(
    registry: OptionRegistry = DEFAULT_REGISTRY, *, max_known: int = 12, max_unknown: int = 4
) -> st.SearchStrategy[Options]:
    """Options with random known codes (valid values) and unknown codes, in random order.

    Payloads of up to 600 octets make RFC 3396 splitting (and, in small messages, option
    overload) happen often. Option 52 is never included: the encoder sets it.
    """
    return _options_map(registry, max_known, max_unknown)


def _field(size: int) -> st.SearchStrategy[bytes]:
    """A fixed-width header field: often all zeros (free for overload), else random."""
    return st.one_of(st.just(bytes(size)), st.binary(max_size=size).map(lambda b: b.ljust(size, b"\0")))


def messages(
    registry: OptionRegistry = DEFAULT_REGISTRY, options: st.SearchStrategy[Options] | None = None
) -> st.SearchStrategy[DhcpMessage]:
    """Messages with random header fields and options.

    ``chaddr``, ``sname`` and ``file`` have their full width, as a decoder returns them,
    so ``decode_message(encode_message(m)) == m`` whenever the message fits.
    """
    u8 = st.integers(0, 0xFF)
    u16 = st.integers(0, 0xFFFF)
    return st.builds(
        DhcpMessage,
        op=st.one_of(st.sampled_from((1, 2)), u8),
        xid=st.integers(0, 0xFFFFFFFF),
        htype=st.one_of(st.just(1), u8),
        hlen=st.one_of(st.just(6), u8),
        hops=u8,
        secs=u16,
        flags=st.one_of(st.sampled_from((0, 0x8000)), u16),
        ciaddr=ipv4_addresses(),
        yiaddr=ipv4_addresses(),
        siaddr=ipv4_addresses(),
        giaddr=ipv4_addresses(),
        chaddr=_field(16),
        sname=_field(64),
        file=_field(128),
        options=options_maps(registry) if options is None else options,
    )


@st.composite
def _encoded(draw: st.DrawFn, registry: OptionRegistry) -> bytes:
    msg = draw(messages(registry))
    max_payload = draw(st.one_of(st.sampled_from(_MAX_PAYLOADS), st.integers(300, MAX_MESSAGE_SIZE)))
    try:
        return encode_message(msg, max_payload=max_payload)
    except EncodeError:
        return encode_message(msg, max_payload=MAX_MESSAGE_SIZE)


def encoded_messages(registry: OptionRegistry = DEFAULT_REGISTRY) -> st.SearchStrategy[bytes]:
    """The bytes of valid messages, for a random size limit (sometimes the UDP maximum)."""
    return _encoded(registry)


def _instance_spans(wire: bytes) -> list[tuple[int, int, int]]:
    """``(code, value_start, value_end)`` of the option instances in the options field."""
    spans: list[tuple[int, int, int]] = []
    # After an earlier mutation the field may be broken: the instances before the break will do.
    with contextlib.suppress(DecodeError):
        scan_field(wire, _FIXED, len(wire), spans)
    return spans


def _truncate(draw: st.DrawFn, wire: bytes) -> bytes:
    anywhere = st.integers(0, len(wire) - 1)
    if len(wire) > _FIXED:  # mostly inside the options, where a decoder has more to get wrong
        anywhere = st.one_of(st.integers(_FIXED, len(wire) - 1), anywhere)
    return wire[: draw(anywhere)]


def _flip_bits(draw: st.DrawFn, wire: bytes) -> bytes:
    out = bytearray(wire)
    for bit in draw(st.lists(st.integers(0, 8 * len(wire) - 1), min_size=1, max_size=8)):
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _corrupt_length(draw: st.DrawFn, wire: bytes) -> bytes:
    spans = _instance_spans(wire)
    if not spans:
        return wire[:_FIXED] + bytes((draw(st.integers(1, 254)), draw(st.integers(0, 255))))
    _, start, _ = draw(st.sampled_from(spans))
    return wire[: start - 1] + bytes((draw(st.integers(0, 255)),)) + wire[start:]


def _garbage_after_header(draw: st.DrawFn, wire: bytes) -> bytes:
    return wire[:_FIXED] + draw(st.binary(max_size=600))


def _random_overload(draw: st.DrawFn, wire: bytes) -> bytes:
    length = draw(st.one_of(st.just(1), st.integers(0, 4)))
    value = draw(st.binary(min_size=length, max_size=length))
    head = bytearray(wire[:_FIXED])
    if draw(st.booleans()):  # options-looking garbage in file and sname
        head[44:236] = draw(st.binary(min_size=192, max_size=192))
    return bytes(head) + bytes((52, length)) + value + wire[_FIXED:]


def _repeat_option(draw: st.DrawFn, wire: bytes) -> bytes:
    spans = _instance_spans(wire)
    if not spans:
        return wire
    _, start, end = draw(st.sampled_from(spans))
    instance = wire[start - 2 : end]
    copies = draw(st.integers(1, 3))
    at = draw(st.sampled_from([s - 2 for _, s, _ in spans] + [end]))
    return wire[:at] + instance * copies + wire[at:]


_MUTATIONS: Final[tuple[Callable[[st.DrawFn, bytes], bytes], ...]] = (
    _truncate,
    _flip_bits,
    _corrupt_length,
    _garbage_after_header,
    _random_overload,
    _repeat_option,
)


@st.composite
def _hostile(draw: st.DrawFn, registry: OptionRegistry) -> bytes:
    wire = draw(encoded_messages(registry))
    for mutate in draw(st.lists(st.sampled_from(_MUTATIONS), min_size=1, max_size=3)):
        if wire:
            wire = mutate(draw, wire)
    return wire


def hostile_bytes(registry: OptionRegistry = DEFAULT_REGISTRY) -> st.SearchStrategy[bytes]:
    """Mutations of valid encodings: truncation, bit flips, corrupt length octets, garbage
    after a valid header and cookie, option 52 with random values, repeated options.

    One to three mutations are stacked; most results must be refused by a decoder.
    """
    return _hostile(registry)
