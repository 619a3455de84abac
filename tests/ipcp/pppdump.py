"""pppd's ``record`` files (the pppdump format), read by our own code.

A record file is a sequence of tagged items: ``1 LEN16 DATA`` bytes pppd sent to the line, ``2 LEN16
DATA`` bytes it received, ``3``/``4`` end of the sent/received stream, ``5 DELTA32`` and ``6 DELTA8``
time steps in tenths of a second, ``7 TIME32`` the start time. The data are the raw line bytes --
flags, escapes and FCS exactly as they crossed the line -- so each direction is one byte stream, and
every run of bytes between two flags is one escaped frame.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from ipcp.frame import Frame, Protocol, decode_frame, encode_frame
from ipcp.hdlc import ACCM_ALL, HdlcDeframer, encode_hdlc
from ipcp.ipcp_options import ipcp_registry
from ipcp.lcp_options import LCP_OPTIONS, MagicNumber
from ipcp.packet import LCP_CODES, NCP_CODES, Packet, decode_packet
from ipcp.rfc1332 import IpAddress
from ipcp.rfc1877 import PrimaryDns, SecondaryDns

__all__ = ["Decoded", "LineFrame", "compare_with_tshark", "decode_line_frame", "line_frames", "read_pppdump"]

IPCP = ipcp_registry()
A = IPv4Address
TSHARK_KNOWN_IPCP = frozenset({1, 2, 3, 129, 130, 131, 132})  # others show only as "Unknown"

SENT, RECEIVED, SENT_END, RECEIVED_END, DELTA32, DELTA8, START = range(1, 8)
FLAG = 0x7E


def read_pppdump(data: bytes) -> list[tuple[bool, bytes, float]]:
    """``(sent_by_pppd, chunk, seconds since the start)`` for every data item, in file order."""
    out: list[tuple[bool, bytes, float]] = []
    pos, tenths = 0, 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag in (SENT, RECEIVED):
            length = int.from_bytes(data[pos : pos + 2], "big")
            chunk = data[pos + 2 : pos + 2 + length]
            if len(chunk) != length:
                raise ValueError(f"pppdump item at {pos - 1} runs past the end")
            out.append((tag == SENT, chunk, tenths / 10))
            pos += 2 + length
        elif tag in (SENT_END, RECEIVED_END):
            pass
        elif tag == DELTA32:
            tenths += int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif tag == DELTA8:
            tenths += data[pos]
            pos += 1
        elif tag == START:
            pos += 4
        else:
            raise ValueError(f"unknown pppdump tag {tag} at {pos - 1}")
    return out


@dataclass(frozen=True, slots=True)
class LineFrame:
    """One frame as it crossed the line: who sent it, and its octets between the flags (escaped, FCS kept)."""

    index: int
    from_pppd: bool
    escaped: bytes


def line_frames(data: bytes) -> list[LineFrame]:
    """Every non-empty run between flags, in the order its closing flag was recorded.

    The two directions are separate streams (a frame may span several items of its direction).
    """
    partial = {True: bytearray(), False: bytearray()}
    started = {True: False, False: False}
    out: list[LineFrame] = []
    for from_pppd, chunk, _time in read_pppdump(data):
        buf = partial[from_pppd]
        for octet in chunk:
            if octet != FLAG:
                buf.append(octet)
                continue
            # pppd's kernel omits the opening flag when the line was busy; our frames always start
            # with one. Bytes before a direction's first flag cannot be a frame.
            if buf and started[from_pppd]:
                out.append(LineFrame(len(out), from_pppd, bytes(buf)))
            buf.clear()
            started[from_pppd] = True
    return out


@dataclass(frozen=True)
class Decoded:
    from_pppd: bool
    frame: Frame
    packet: Packet | None


def decode_line_frame(line: LineFrame) -> Decoded:
    """Check one frame byte for byte (see the module docstring) and return what it holds."""
    raw = b"\x7e" + line.escaped + b"\x7e"
    deframer = HdlcDeframer(receive_accm=0)
    (wire,) = deframer.feed(raw)
    frame = decode_frame(wire)
    acfc = not wire.startswith(b"\xff\x03")
    pfc = wire[0 if acfc else 2] & 1 == 1
    assert encode_frame(frame, acfc=acfc, pfc=pfc) == wire
    # LCP always goes out with every control character escaped; the rest with the negotiated ACCM 0.
    assert encode_hdlc(wire, accm=ACCM_ALL if frame.protocol == Protocol.LCP else 0) == raw, line
    packet: Packet | None = None
    if frame.protocol == Protocol.LCP:
        packet = decode_packet(frame.information, LCP_OPTIONS, codes=LCP_CODES)
    elif frame.protocol == Protocol.IPCP:
        packet = decode_packet(frame.information, IPCP, codes=NCP_CODES)
    if packet is not None:
        assert packet.encode() == frame.information
    else:
        assert frame.protocol == Protocol.IPV4
    return Decoded(line.from_pppd, frame, packet)


def _fields(values: str) -> list[str]:
    return [v for v in values.split(",") if v]


def compare_with_tshark(path: Path, decoded: list[Decoded]) -> None:
    """tshark's reading of a pppdump file, frame by frame, against ours."""
    names = [
        "ppp.direction", "ppp.protocol", "ppp.code", "ppp.identifier", "lcp.opt.type",
        "lcp.opt.magic_number", "ipcp.opt.type", "ipcp.opt.ip_address", "ipcp.opt.pri_dns_address",
        "ipcp.opt.sec_dns_address", "ip.src", "ip.dst",
    ]  # fmt: skip
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    argv += ["-E", "aggregator=,"] + [x for n in names for x in ("-e", n)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    # pppd ends its record with a time step and an end-of-stream item and no data after them;
    # wiretap reports that as "cut short in the middle of a packet" (status 2) after reading every frame.
    assert proc.returncode == 0 or "cut short" in proc.stderr, proc.stderr
    out = proc.stdout
    rows = [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines()]
    assert len(rows) == len(decoded)
    for row, ours in zip(rows, decoded, strict=True):
        assert row["ppp.direction"] == ("0" if ours.from_pppd else "1"), (row, ours)  # 0: sent by pppd
        assert int(row["ppp.protocol"], 16) == ours.frame.protocol
        packet = ours.packet
        if packet is None:
            datagram = ours.frame.information
            assert (row["ip.src"], row["ip.dst"]) == (str(A(datagram[12:16])), str(A(datagram[16:20])))
            continue
        assert int(row["ppp.code"]) == packet.code, (row, packet)
        assert int(row["ppp.identifier"]) == packet.identifier
        options = list(getattr(packet, "options", ()))
        if ours.frame.protocol == Protocol.LCP:
            assert [int(t) for t in _fields(row["lcp.opt.type"])] == [o.type_code for o in options]
            magic = [o.magic for o in options if isinstance(o, MagicNumber)]
            assert [int(m, 16) for m in _fields(row["lcp.opt.magic_number"])] == magic
            continue
        known = [o for o in options if o.type_code in TSHARK_KNOWN_IPCP]
        assert [int(t) for t in _fields(row["ipcp.opt.type"])] == [o.type_code for o in known], (row, packet)
        for field, kind in (
            ("ipcp.opt.ip_address", IpAddress),
            ("ipcp.opt.pri_dns_address", PrimaryDns),
            ("ipcp.opt.sec_dns_address", SecondaryDns),
        ):
            assert _fields(row[field]) == [str(o.address) for o in options if isinstance(o, kind)]
