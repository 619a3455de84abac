"""The draft-lee VPN options (docs/wire-format.md sections 5 and 6).

A 1,000-CE VPN travels whole in one reply; :func:`apply_peer_blocks` agrees with a
plain model of the add/delete table; the constructor bounds a block at 255 peers; and
malformed Peer-CE bytes are a :class:`DecodeError` pointing at the bad block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from options import (
    PEER_CE,
    VPN_SERVERS,
    DecodeError,
    DhcpMessage,
    EncodeError,
    Options,
    PeerCeBlock,
    decode_message,
    encode_message,
    max_payload_for,
)
from options.message import MAGIC_COOKIE
from options.rfc2132 import MAXIMUM_MESSAGE_SIZE, MESSAGE_TYPE, MessageType
from options.rfc3396 import END, scan_field
from options.strategies import ipv4_addresses, peer_ce_blocks
from options.vpn import (
    MAX_PEERS_PER_BLOCK,
    apply_peer_blocks,
    full_sync_blocks,
    registry_with_vpn_codes,
    vpn_specs,
)

State = dict[int, frozenset[IPv4Address]]


def budget(share: float) -> int:
    """A share of the profile's ``max_examples`` (100 unless HYPOTHESIS_PROFILE says otherwise)."""
    return max(5, int(settings().max_examples * share))


def addresses(count: int, base: str = "10.0.0.1") -> list[IPv4Address]:
    return [IPv4Address(int(IPv4Address(base)) + i) for i in range(count)]


def ack_with(*items: tuple[int, bytes]) -> DhcpMessage:
    return DhcpMessage(2, options=Options([MESSAGE_TYPE.item(MessageType.DHCPACK), *items]))


# -- a 1,000-CE VPN in one message -----------------------------------------------------


def test_a_1000_ce_vpn_round_trips_through_a_whole_message() -> None:
    members = addresses(1000)
    me, peers = members[0], members[1:]
    blocks = full_sync_blocks({7: peers})
    assert [(b.add, len(b.peers)) for b in blocks] == [
        (False, 0),
        (True, 255),
        (True, 255),
        (True, 255),
        (True, 234),
    ]
    # The client asked for 8192-octet datagrams (option 57), so the server may use 8164.
    request = DhcpMessage(1, options=Options([MAXIMUM_MESSAGE_SIZE.item(8192)]))
    assert max_payload_for(request) == 8192 - 28
    wire = encode_message(ack_with(PEER_CE.item(blocks)), max_payload=max_payload_for(request))
    assert len(wire) <= 8192 - 28
    spans: list[tuple[int, int, int]] = []
    scan_field(wire, 240, len(wire), spans)
    assert sum(1 for code, _, _ in spans if code == PEER_CE.code) == 16  # 4,026 octets (docs, section 5)

    received = decode_message(wire).options.value(PEER_CE)
    assert received == blocks
    stale = {7: frozenset(addresses(5, "192.0.2.1")), 9: frozenset([me])}  # what the CE believed before
    assert apply_peer_blocks(stale, received, complete=True) == {7: frozenset(peers)}


def test_a_1000_ce_vpn_does_not_fit_a_548_octet_reply_and_the_encoder_says_so() -> None:
    blocks = full_sync_blocks({7: addresses(999)})
    with pytest.raises(EncodeError, match="do not fit"):
        encode_message(ack_with(PEER_CE.item(blocks)), max_payload=548)


memberships = st.dictionaries(
    st.integers(0, 0xFFFFFFFF), st.frozensets(ipv4_addresses(), max_size=300), max_size=4
)
states = st.dictionaries(st.integers(0, 20), st.frozensets(ipv4_addresses(), max_size=10), max_size=4)


@settings(max_examples=budget(0.3), deadline=None)
@given(truth=memberships, before=states)
def test_a_full_sync_reply_gives_the_servers_view_whatever_the_client_held(
    truth: Mapping[int, frozenset[IPv4Address]], before: State
) -> None:
    if not truth:
        return  # a reply naming no VPN carries no Peer-CE option at all
    wire = encode_message(ack_with(PEER_CE.item(full_sync_blocks(truth))), max_payload=65507)
    received = decode_message(wire).options.value(PEER_CE)
    assert apply_peer_blocks(before, received, complete=True) == dict(truth)


# -- add/delete semantics against a model ----------------------------------------------


def model(
    current: Mapping[int, frozenset[IPv4Address]], blocks: Iterable[PeerCeBlock], complete: bool
) -> State:
    """docs/wire-format.md's table, one row at a time."""
    blocks = list(blocks)
    named = {b.vpn_id for b in blocks}
    state: State = {v: p for v, p in current.items() if not complete or v in named}
    for b in blocks:
        held = state.get(b.vpn_id, frozenset())
        if b.add:
            state[b.vpn_id] = held | frozenset(b.peers)
        elif b.peers:
            state[b.vpn_id] = held - frozenset(b.peers)
        else:
            state[b.vpn_id] = frozenset()
    return state


# Few VPN IDs and addresses, so blocks often touch the same VPN and the same peers.
small_blocks = st.builds(
    PeerCeBlock,
    st.integers(0, 3),
    st.booleans(),
    st.lists(st.sampled_from(addresses(6)), max_size=6).map(tuple),
)
small_states = st.dictionaries(st.integers(0, 3), st.frozensets(st.sampled_from(addresses(6))), max_size=4)


@settings(max_examples=budget(1.0), deadline=None)
@given(current=small_states, blocks=st.lists(small_blocks, max_size=8), complete=st.booleans())
def test_apply_peer_blocks_agrees_with_the_model(
    current: State, blocks: list[PeerCeBlock], complete: bool
) -> None:
    before = dict(current)
    assert apply_peer_blocks(current, blocks, complete=complete) == model(current, blocks, complete)
    assert current == before  # the caller's state is not mutated


A, B, C = addresses(3)


@pytest.mark.parametrize(
    ("block", "after"),
    [
        (PeerCeBlock(1, True, (C,)), frozenset({A, B, C})),  # A=1 with addresses: add them
        (PeerCeBlock(1, True), frozenset({A, B})),  # A=1 with none: nothing to add
        (PeerCeBlock(1, False, (A,)), frozenset({B})),  # A=0 with addresses: remove them
        (PeerCeBlock(1, False), frozenset()),  # A=0 with none: remove every peer
    ],
)
def test_each_row_of_the_semantics_table(block: PeerCeBlock, after: frozenset[IPv4Address]) -> None:
    current = {1: frozenset({A, B}), 2: frozenset({C})}
    assert apply_peer_blocks(current, [block], complete=False) == {1: after, 2: frozenset({C})}
    assert apply_peer_blocks(current, [block], complete=True) == {1: after}  # VPN 2 not named: left


def test_a_vpn_whose_only_member_is_this_ce_exists_with_no_peers() -> None:
    assert apply_peer_blocks({}, full_sync_blocks({5: []}), complete=True) == {5: frozenset()}


# -- the constructor -------------------------------------------------------------------


def test_a_block_holds_at_most_255_peers() -> None:
    assert len(PeerCeBlock(1, True, tuple(addresses(MAX_PEERS_PER_BLOCK))).peers) == 255
    with pytest.raises(ValueError, match="at most 255 peers"):
        PeerCeBlock(1, True, tuple(addresses(MAX_PEERS_PER_BLOCK + 1)))


@pytest.mark.parametrize("vpn_id", [-1, 1 << 32])
def test_a_vpn_id_is_32_bits(vpn_id: int) -> None:
    with pytest.raises(ValueError, match="32 bits"):
        PeerCeBlock(vpn_id, True)


def test_peers_are_addresses() -> None:
    with pytest.raises(TypeError):
        PeerCeBlock(1, True, ("10.0.0.1",))  # type: ignore[arg-type]


def test_an_empty_peer_ce_value_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        PEER_CE.encode(())


# -- malformed bytes -------------------------------------------------------------------

GOOD = bytes.fromhex("0000000701020a0000010a000002")  # VPN 7, add, 2 peers


@pytest.mark.parametrize(
    ("payload", "offset", "reason"),
    [
        (b"", 0, "empty option"),
        (bytes.fromhex("0000000701"), 0, "block header needs 6 bytes, 5 left"),
        (GOOD + bytes.fromhex("00000008"), len(GOOD), "block header needs 6 bytes, 4 left"),
        (bytes.fromhex("000000070103") + bytes(8), 0, "block of 3 peers runs past"),
        (GOOD + bytes.fromhex("0000000801ff") + bytes(40), len(GOOD), "block of 255 peers runs past"),
        (GOOD + b"\x00", len(GOOD), "block header needs 6 bytes, 1 left"),
    ],
)
def test_malformed_peer_ce_bytes_are_a_decode_error_at_the_bad_block(
    payload: bytes, offset: int, reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason) as exc:
        PEER_CE.decode(payload)
    assert exc.value.offset == offset


def test_in_a_message_the_offset_is_the_bad_blocks_place_in_the_packet() -> None:
    # Block 1 (VPN 1, 63 peers) is 258 octets, so RFC 3396 splits the payload after 255
    # and block 2 starts 3 octets into the second instance. Block 2 claims 9 peers that
    # are not there: the error must point at block 2's header where it lies in the packet.
    block1 = bytes.fromhex("00000001013f") + bytes(4 * 63)
    block2 = bytes.fromhex("000000020109")
    payload = block1 + block2
    first, second = payload[:255], payload[255:]
    options_field = bytes((PEER_CE.code, len(first))) + first + bytes((PEER_CE.code, len(second))) + second
    data = bytes(236) + MAGIC_COOKIE + options_field + bytes((END,))
    msg = decode_message(data)  # framing is fine; the value is checked when read
    with pytest.raises(DecodeError, match="block of 9 peers") as exc:
        msg.options.value(PEER_CE)
    assert exc.value.offset == len(block1)  # in the payload
    with pytest.raises(DecodeError, match="block of 9 peers") as strict:
        decode_message(data, strict=True)
    second_value = 240 + 2 + 255 + 2
    assert strict.value.offset == second_value + 3
    assert data[strict.value.offset : strict.value.offset + 6] == block2


@settings(max_examples=budget(0.5), deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=400),
        st.tuples(  # valid blocks, then a partial or complete extra one
            st.lists(peer_ce_blocks(max_peers=8), min_size=1, max_size=4),
            st.binary(max_size=12),
        ).map(lambda bt: PEER_CE.encode(tuple(bt[0])) + bt[1]),
    )
)
def test_peer_ce_decode_of_any_bytes_is_a_value_or_a_decode_error(payload: bytes) -> None:
    try:
        blocks = PEER_CE.decode(payload)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(payload)
        return
    assert PEER_CE.decode(PEER_CE.encode(blocks)) == blocks


def test_reserved_flag_bits_are_ignored_on_receipt_and_sent_as_zero() -> None:
    received = PEER_CE.decode(bytes.fromhex("00000007fe00"))  # A=0, other bits set
    assert received == (PeerCeBlock(7, add=False),)
    assert PEER_CE.encode(received) == bytes.fromhex("000000070000")


# -- VPN configuration servers and codes -----------------------------------------------


def test_vpn_servers_keep_their_order_of_preference() -> None:
    servers = (IPv4Address("198.51.100.2"), IPv4Address("198.51.100.1"))
    msg = decode_message(encode_message(ack_with(VPN_SERVERS.item(servers))))
    assert msg.options.value(VPN_SERVERS) == servers


@pytest.mark.parametrize(("peer", "server"), [(223, 225), (224, 255), (230, 230)])
def test_vpn_codes_must_be_distinct_and_site_specific(peer: int, server: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - either rule may fire
        vpn_specs(peer, server)


def test_a_registry_can_move_the_vpn_options() -> None:
    registry = registry_with_vpn_codes(240, 241)
    blocks = (PeerCeBlock(3, True, (A,)),)
    spec = registry.get(240)
    assert spec is not None
    assert registry.get(PEER_CE.code) is None
    wire = encode_message(ack_with((240, PEER_CE.encode(blocks))))
    assert decode_message(wire, registry).options.value(spec) == blocks
