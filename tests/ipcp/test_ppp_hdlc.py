"""RFC 1662 framing: FCS check values, escaping, and the streaming deframer under random chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcp.hdlc import (
    ACCM_ALL,
    FCS16_GOOD,
    FCS32_GOOD,
    HdlcDeframer,
    encode_hdlc,
    fcs16,
    fcs32,
)

CHECK = b"123456789"


def test_fcs16_check_value_is_crc16_x25() -> None:
    assert fcs16(CHECK) ^ 0xFFFF == 0x906E


def test_fcs32_check_value_is_crc32() -> None:
    assert fcs32(CHECK) ^ 0xFFFFFFFF == 0xCBF43926


@given(st.binary(max_size=100))
def test_good_frame_residues(payload: bytes) -> None:
    fcs = (fcs16(payload) ^ 0xFFFF).to_bytes(2, "little")
    assert fcs16(payload + fcs) == FCS16_GOOD
    fcs_32 = (fcs32(payload) ^ 0xFFFFFFFF).to_bytes(4, "little")
    assert fcs32(payload + fcs_32) == FCS32_GOOD


def test_pppd_lcp_frame_on_the_wire() -> None:
    """With the default ACCM every control character is escaped, like pppd's LCP frames."""
    payload = bytes.fromhex("ff03c0210101001002060000000005061215101c")
    wire = encode_hdlc(payload)
    assert wire[0] == wire[-1] == 0x7E
    inner = wire[1:-1]
    assert all(b >= 0x20 for b in inner)
    assert inner.startswith(bytes.fromhex("ff7d23c0217d21"))


def test_flag_and_escape_always_escaped_even_with_accm_zero() -> None:
    wire = encode_hdlc(b"\x7e\x7d\x01", accm=0)
    assert wire.startswith(b"\x7e\x7d\x5e\x7d\x5d\x01")
    assert wire.count(b"\x7e") == 2


def test_accm_selects_escaped_control_characters() -> None:
    wire = encode_hdlc(bytes([0x11, 0x13, 0x05]), accm=(1 << 0x11) | (1 << 0x13))
    assert wire.startswith(b"\x7e\x7d\x31\x7d\x33\x05")


@given(
    st.lists(st.binary(min_size=2, max_size=300), min_size=1, max_size=8),
    st.integers(0, ACCM_ALL),
    st.sampled_from([16, 32]),
    st.data(),
)
def test_deframer_recovers_frames_from_any_chunking(
    payloads: list[bytes], accm: int, fcs_bits: int, data: st.DataObject
) -> None:
    stream = b"".join(encode_hdlc(p, accm=accm, fcs_bits=fcs_bits) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    deframer = HdlcDeframer(fcs_bits=fcs_bits, receive_accm=accm)
    got = [frame for chunk in chunks for frame in deframer.feed(chunk)]
    assert got == payloads
    assert deframer.counters.good == len(payloads)


def test_shared_flags_between_frames() -> None:
    a, b = encode_hdlc(b"\xff\x03abc"), encode_hdlc(b"\xff\x03def")
    deframer = HdlcDeframer()
    assert deframer.feed(a[:-1] + b) == [b"\xff\x03abc", b"\xff\x03def"]


def test_bad_fcs_is_counted_and_dropped() -> None:
    wire = bytearray(encode_hdlc(b"\xff\x03hello"))
    wire[4] ^= 0x01
    deframer = HdlcDeframer()
    assert deframer.feed(bytes(wire) + encode_hdlc(b"\xff\x03next")) == [b"\xff\x03next"]
    assert deframer.counters.bad_fcs == 1


def test_abort_sequence_drops_the_frame() -> None:
    deframer = HdlcDeframer()
    assert deframer.feed(b"\x7e\xff\x03abc\x7d\x7e" + encode_hdlc(b"\xff\x03ok")) == [b"\xff\x03ok"]
    assert deframer.counters.aborted == 1


def test_oversized_frame_is_dropped_and_memory_bounded() -> None:
    deframer = HdlcDeframer(max_frame=64)
    big = encode_hdlc(b"\xff\x03" + b"A" * 200)
    deframer.feed(big[:150])
    assert len(deframer._buf) <= 2 * 64
    assert deframer.feed(big[150:] + encode_hdlc(b"\xff\x03ok")) == [b"\xff\x03ok"]
    assert deframer.counters.oversized == 1


def test_escaped_oversize_just_past_the_limit() -> None:
    deframer = HdlcDeframer(max_frame=10)
    assert deframer.feed(encode_hdlc(b"\xff\x03" + b"B" * 7)) == []
    assert deframer.counters.oversized == 1


def test_runt_frames_are_counted() -> None:
    deframer = HdlcDeframer()
    assert deframer.feed(b"\x7e\x01\x02\x7e") == []
    assert deframer.counters.runt == 1


def test_bytes_before_first_flag_are_ignored() -> None:
    deframer = HdlcDeframer()
    assert deframer.feed(b"garbage" + encode_hdlc(b"\xff\x03ok")) == [b"\xff\x03ok"]
    assert deframer.counters.bad_fcs == 0


def test_receive_accm_removes_inserted_control_characters() -> None:
    """RFC 1662 section 7.1: flagged characters received unescaped are removed before the FCS check."""
    wire = encode_hdlc(b"\xff\x03xyz")
    noisy = wire[:3] + b"\x11" + wire[3:]  # XON inserted by a modem
    deframer = HdlcDeframer(receive_accm=1 << 0x11)
    assert deframer.feed(noisy) == [b"\xff\x03xyz"]
    strict = HdlcDeframer(receive_accm=0)
    assert strict.feed(noisy) == []
    assert strict.counters.bad_fcs == 1


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_deframer_total_on_random_bytes(noise: bytes, chunk: int) -> None:
    deframer = HdlcDeframer(max_frame=256)
    for i in range(0, len(noise), chunk):
        for frame in deframer.feed(noise[i : i + chunk]):
            assert isinstance(frame, bytes)
            assert len(frame) <= 256


def test_invalid_fcs_size_refused() -> None:
    with pytest.raises(ValueError, match="FCS size"):
        encode_hdlc(b"", fcs_bits=8)
    with pytest.raises(ValueError, match="FCS size"):
        HdlcDeframer(fcs_bits=24)


def test_receive_accm_change_applies_to_the_rest_of_the_same_chunk() -> None:
    """Found on a real pty: LCP's last Ack and the first IPCP frame (sent with ACCM 0) arrived in
    one read; the IPCP frame must be checked with the map LCP just settled."""
    lcp_ack = encode_hdlc(b"\xff\x03\xc0\x21\x02\x01\x00\x04")
    ipcp = encode_hdlc(b"\xff\x03\x80\x21\x01\x01\x00\x04", accm=0)
    deframer = HdlcDeframer()
    got = []
    for frame in deframer.frames(lcp_ack + ipcp):
        got.append(frame)
        deframer.receive_accm = 0  # what a session does when that Ack opens LCP
    assert got == [b"\xff\x03\xc0\x21\x02\x01\x00\x04", b"\xff\x03\x80\x21\x01\x01\x00\x04"]
    assert deframer.counters.bad_fcs == 0
