"""options.pcap: captures built by hand here, byte by byte, so every field's role is explicit.

pcapng is written as its spec lays it out (SHB, IDB, EPB/SPB blocks, both byte orders);
link layers are Ethernet with VLAN tags, Linux SLL and SLL2, and raw IPv4.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from ce_autoconf.cli import main
from options import BOOTREPLY, DhcpMessage, MessageType, Options, encode_message, rfc2132
from options.pcap import CaptureError, CaptureStats, read_capture

CAPTURES = Path(__file__).resolve().parents[2] / "examples" / "captures"
SRC = bytes([10, 77, 0, 1])
DST = bytes([10, 77, 0, 50])


def dhcp_payload(xid: int = 42) -> bytes:
    msg = DhcpMessage(
        op=BOOTREPLY,
        xid=xid,
        chaddr=bytes.fromhex("020000770032"),
        options=Options([rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK)]),
    )
    return encode_message(msg)


def udp_ipv4(
    payload: bytes,
    sport: int = 67,
    dport: int = 68,
    *,
    proto: int = 17,
    frag: int = 0,
    ip_options: bytes = b"",
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ihl = 5 + len(ip_options) // 4
    total = 4 * ihl + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0, SRC, DST)
    return header + ip_options + udp


def ethernet(ip: bytes, *, vlans: int = 0, ethertype: int = 0x0800) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(vlans))
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + tags + struct.pack("!H", ethertype) + ip + b"\0" * 4


def sll(ip: bytes) -> bytes:
    return struct.pack("!HHH8sH", 4, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800) + ip


def sll2(ip: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 4, 6, b"\x02" * 6 + b"\0\0") + ip


def pcap(frames: list[bytes], linktype: int = 1, order: str = "<") -> bytes:
    out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame
    return out


def block(order: str, kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(order + "II", kind, total) + body + struct.pack(order + "I", total)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int) -> bytes:
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, 0))


def epb(order: str, frame: bytes, iface: int = 0) -> bytes:
    return block(order, 6, struct.pack(order + "IIIII", iface, 0, 0, len(frame), len(frame)) + frame)


def spb(order: str, frame: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(frame)) + frame)


def datagrams(data: bytes) -> tuple[list[bytes], CaptureStats]:
    stats = CaptureStats()
    return [d.payload for d in read_capture(io.BytesIO(data), stats)], stats


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_both_byte_orders(order: str) -> None:
    payload = dhcp_payload()
    found, stats = datagrams(pcap([ethernet(udp_ipv4(payload))], order=order))
    assert found == [payload]  # Ethernet padding after the IP datagram is not part of it
    assert (stats.frames, stats.datagrams) == (1, 1)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_sections_interfaces_and_blocks(order: str) -> None:
    one, two, three = dhcp_payload(1), dhcp_payload(2), dhcp_payload(3)
    data = (
        shb(order)
        + idb(order, 1)
        + idb(order, 113)
        + epb(order, ethernet(udp_ipv4(one)))
        + block(order, 4, b"\x00" * 8)  # a name resolution block: skipped
        + epb(order, sll(udp_ipv4(two)), iface=1)
        + spb(order, ethernet(udp_ipv4(three)))
    )
    found, stats = datagrams(data)
    assert found == [one, two, three]
    assert stats.frames == 3
    # A second section may change byte order and starts its own interface list.
    other = ">" if order == "<" else "<"
    more, _ = datagrams(data + shb(other) + idb(other, 276) + epb(other, sll2(udp_ipv4(one))))
    assert more == [one, two, three, one]


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ethernet(udp_ipv4(dhcp_payload()), vlans=2)),
        (113, sll(udp_ipv4(dhcp_payload()))),
        (276, sll2(udp_ipv4(dhcp_payload()))),
        (101, udp_ipv4(dhcp_payload())),
        (228, udp_ipv4(dhcp_payload())),
        (1, ethernet(udp_ipv4(dhcp_payload(), ip_options=b"\x94\x04\x00\x00"))),  # router alert, IHL 6
    ],
)
def test_link_layers_and_ip_options(linktype: int, frame: bytes) -> None:
    found, _ = datagrams(pcap([frame], linktype))
    assert found == [dhcp_payload()]


def test_skipped_frames_are_counted() -> None:
    payload = dhcp_payload()
    frames = [
        ethernet(udp_ipv4(payload, frag=0x2000)),  # first fragment (MF)
        ethernet(udp_ipv4(payload, frag=0x0010)),  # a later fragment
        ethernet(udp_ipv4(payload, frag=0x4000)),  # DF only: a whole datagram
        ethernet(udp_ipv4(payload, 5353, 5353)),
        ethernet(udp_ipv4(payload, proto=6)),
        ethernet(b"\x60" + b"\0" * 39, ethertype=0x86DD),
        ethernet(udp_ipv4(payload))[:100],  # cut by the snapshot length
    ]
    found, stats = datagrams(pcap(frames))
    assert found == [payload]
    assert stats.skipped() == {
        "fragments": 2,
        "other_ports": 1,
        "not_udp": 1,
        "not_ipv4": 1,
        "truncated": 1,
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x02\x03rest", "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "file header truncated"),
        (pcap([], linktype=204), "unsupported link type 204"),
        (pcap([b"x" * 50])[:-10], "record data truncated"),
        (pcap([b"x" * 50])[:-60], "record header truncated"),
        (pcap([]) + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30), "larger than any capture"),
        (shb("<")[:-4] + b"\0\0\0\0", "trailing length"),
        (shb("<") + struct.pack("<II", 6, 13), "impossible length"),
        (shb("<") + epb("<", b"frame"), "interface 0, which is not described"),
        (b"\x0a\x0d\x0d\x0a" + b"\x1c\0\0\0" + b"abcd", "no byte-order magic"),
    ],
)
def test_damaged_captures_raise_capture_error(data: bytes, reason: str) -> None:
    with pytest.raises(CaptureError) as info:
        datagrams(data)
    assert reason in info.value.reason
    assert 0 <= info.value.offset <= len(data)


def test_every_truncation_of_a_real_capture_is_handled() -> None:
    """Cut anywhere, a capture yields whole datagrams then a CaptureError, never another exception."""
    data = (CAPTURES / "02_delayed_bind.pcap").read_bytes()
    ends = [24]
    while ends[-1] < len(data):
        ends.append(ends[-1] + 16 + struct.unpack_from("<I", data, ends[-1] + 8)[0])
    for cut in range(len(data)):
        found: list[bytes] = []
        damaged = False
        try:
            found.extend(d.payload for d in read_capture(io.BytesIO(data[:cut])))
        except CaptureError:
            damaged = True
        assert len(found) == sum(1 for end in ends[1:] if end <= cut)
        assert damaged == (cut not in ends)


def test_pcapng_through_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The shipped capture rewritten as pcapng decodes to the same messages and MAC results."""
    classic = (CAPTURES / "02_delayed_bind.pcap").read_bytes()
    frames = []
    pos = 24
    while pos < len(classic):
        (length,) = struct.unpack_from("<I", classic, pos + 8)
        frames.append(classic[pos + 16 : pos + 16 + length])
        pos += 16 + length
    ng = tmp_path / "bind.pcapng"
    ng.write_bytes(shb("<") + idb("<", 1) + b"".join(epb("<", f) for f in frames))
    key = "--key=4660:7264632d7365637265742d6b65792d31"
    assert main(["decode", "--json", key, str(ng)]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in records] == [f"{ng}:frame {i}" for i in (1, 2, 3, 4)]
    assert [r["auth"]["valid"] for r in records] == [False, True, True, True]
    assert main(["decode", "--json", key, str(CAPTURES / "02_delayed_bind.pcap")]) == 0
    classic_out, _ = capsys.readouterr()
    classic_records = [json.loads(line) for line in classic_out.splitlines()]
    for from_ng, from_classic in zip(records, classic_records, strict=True):
        assert from_ng | {"source": ""} == from_classic | {"source": ""}
    assert "4 frames, 4 DHCP datagrams" in err
