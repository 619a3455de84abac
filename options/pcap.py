"""A small streaming reader of pcap and pcapng captures, for ``ce-autoconf decode``.

It yields the UDP payloads of IPv4 datagrams to or from ports 67/68, one record at a
time, so a capture of any size is read in constant memory. Link types: Ethernet (with
802.1Q/802.1ad tags), Linux cooked v1 (SLL) and v2 (SLL2), and raw IPv4. IP fragments
cannot be decoded without reassembly, so they are skipped and counted, as is every
other frame that is not a whole DHCP datagram (:class:`CaptureStats`).

A damaged file raises :class:`CaptureError` (reason and byte offset in the file), never
anything else; frames already yielded stay valid.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from typing import Final, Protocol

__all__ = [
    "DHCP_PORTS",
    "ByteSource",
    "CaptureError",
    "CaptureStats",
    "Datagram",
    "is_capture",
    "read_capture",
]

DHCP_PORTS: Final = frozenset({67, 68})

PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": "<",  # microsecond timestamps
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanosecond timestamps
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"  # the section header block type, the same in both byte orders

LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_LINUX_SLL2: Final = 276

#: Larger records are taken as corruption: libpcap's own snapshot limit is 256 KiB
#: (1 MiB for a few link types), and a DHCP message fits in 64 KiB.
MAX_RECORD: Final = 1 << 20
_MAX_BLOCK: Final = MAX_RECORD + 4096

_ETHERTYPE_IPV4: Final = 0x0800
_VLAN_TAGS: Final = frozenset({0x8100, 0x88A8, 0x9100})
_UDP: Final = 17
_MF_OR_OFFSET: Final = 0x3FFF

_BLOCK_SHB: Final = 0x0A0D0D0A
_BLOCK_IDB: Final = 1
_BLOCK_PB: Final = 2  # obsolete packet block
_BLOCK_SPB: Final = 3
_BLOCK_EPB: Final = 6
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D


class ByteSource(Protocol):
    """What the reader needs of a stream: blocking reads that return short only at end of file."""

    def read(self, size: int, /) -> bytes: ...


class CaptureError(ValueError):
    """The capture file itself is damaged or not a capture; ``offset`` is a file position."""

    __slots__ = ("offset", "reason")

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Datagram:
    """One DHCP datagram found in a capture; ``frame`` counts packets from 1, as Wireshark does."""

    frame: int
    src: IPv4Address
    dst: IPv4Address
    sport: int
    dport: int
    payload: bytes


@dataclass(slots=True)
class CaptureStats:
    """Per-capture counters: every frame is a datagram or is counted once under a reason."""

    frames: int = 0
    datagrams: int = 0
    fragments: int = 0
    not_ipv4: int = 0
    not_udp: int = 0
    other_ports: int = 0
    truncated: int = 0
    bad_ip: int = 0
    unsupported_link: int = 0

    def skipped(self) -> dict[str, int]:
        """The non-zero skip counters by reason."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("frames", "datagrams") and getattr(self, f.name)
        }


def is_capture(head: bytes) -> bool:
    """Whether the first bytes of a file are a pcap or pcapng magic number."""
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC


def read_capture(
    stream: ByteSource, stats: CaptureStats | None = None, ports: frozenset[int] = DHCP_PORTS
) -> Iterator[Datagram]:
    """Yield the DHCP datagrams of a pcap or pcapng stream, reading it sequentially."""
    counts = stats if stats is not None else CaptureStats()
    reader = _Stream(stream)
    magic = reader.read(4)
    if magic in PCAP_MAGICS:
        records = _pcap_records(reader, PCAP_MAGICS[magic])
    elif magic == PCAPNG_MAGIC:
        records = _pcapng_records(reader)
    else:
        raise CaptureError("not a pcap or pcapng file (unknown magic number)", 0)
    for linktype, frame in records:
        counts.frames += 1
        found = _extract(linktype, frame, counts, ports)
        if found is not None:
            counts.datagrams += 1
            src, dst, sport, dport, payload = found
            yield Datagram(counts.frames, IPv4Address(src), IPv4Address(dst), sport, dport, payload)


class _Stream:
    """Exact reads with the file offset kept for error messages."""

    __slots__ = ("_read", "offset")

    def __init__(self, stream: ByteSource) -> None:
        self._read = stream.read
        self.offset = 0

    def read(self, size: int, what: str = "file header") -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise CaptureError(f"{what} truncated: {len(data)} of {size} bytes", self.offset + len(data))
        self.offset += size
        return data

    def read_or_eof(self, size: int, what: str) -> bytes | None:
        """``size`` bytes, or None at a clean end of file."""
        data = self._read(size)
        if not data:
            return None
        if len(data) != size:
            raise CaptureError(f"{what} truncated: {len(data)} of {size} bytes", self.offset + len(data))
        self.offset += size
        return data


def _pcap_records(reader: _Stream, order: str) -> Iterator[tuple[int, bytes]]:
    """Classic libpcap: a 24-byte file header, then 16-byte record headers each followed by data."""
    _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", reader.read(20))
    linktype = network & 0xFFFF  # the upper bits may carry FCS information
    if linktype not in _LINK_OFFSETS:
        raise CaptureError(f"unsupported link type {linktype}", 20)
    record = struct.Struct(order + "IIII")
    while True:
        start = reader.offset
        header = reader.read_or_eof(16, "record header")
        if header is None:
            return
        _sec, _frac, incl_len, _orig_len = record.unpack(header)
        if incl_len > MAX_RECORD:
            raise CaptureError(f"record of {incl_len} bytes is larger than any capture holds", start + 8)
        yield linktype, reader.read(incl_len, "record data")


def _pcapng_records(reader: _Stream) -> Iterator[tuple[int, bytes]]:
    """pcapng: a sequence of sections, each a header block, interface blocks and packet blocks."""
    order = _section_header(reader, 0)
    interfaces: list[int] = []
    while True:
        start = reader.offset
        head = reader.read_or_eof(8, "block header")
        if head is None:
            return
        if head[:4] == PCAPNG_MAGIC:
            order = _section_header(reader, start, head[4:])
            interfaces = []
            continue
        block_type, total = struct.unpack(order + "II", head)
        if total % 4 or not 12 <= total <= _MAX_BLOCK:
            raise CaptureError(f"block type {block_type:#x} has an impossible length {total}", start + 4)
        body = reader.read(total - 8, "block")
        if struct.unpack_from(order + "I", body, len(body) - 4)[0] != total:
            raise CaptureError("block's trailing length differs from its leading length", start + total - 4)
        size = len(body) - 4
        if block_type == _BLOCK_IDB:
            if size < 8:
                raise CaptureError("interface description block is too short", start)
            interfaces.append(struct.unpack_from(order + "H", body)[0])
        elif block_type in (_BLOCK_EPB, _BLOCK_PB):
            if size < 20:
                raise CaptureError("packet block is too short", start)
            if block_type == _BLOCK_EPB:
                iface, _hi, _lo, caplen, _orig = struct.unpack_from(order + "IIIII", body)
            else:
                iface, _drops, _hi, _lo, caplen, _orig = struct.unpack_from(order + "HHIIII", body)
            if caplen > size - 20:
                raise CaptureError(f"packet of {caplen} bytes runs past its block", start + 20)
            yield _linktype(interfaces, iface, start), body[20 : 20 + caplen]
        elif block_type == _BLOCK_SPB:
            if size < 4:
                raise CaptureError("simple packet block is too short", start)
            orig_len = struct.unpack_from(order + "I", body)[0]
            yield _linktype(interfaces, 0, start), body[4 : 4 + min(orig_len, size - 4)]
        # Name resolution, statistics, decryption secrets, custom blocks: nothing to decode.


def _section_header(reader: _Stream, start: int, length_bytes: bytes | None = None) -> str:
    """Read a section header block after its type; return its byte order."""
    if length_bytes is None:
        length_bytes = reader.read(4, "section header block")
    magic = reader.read(4, "section header block")
    if magic == b"\x4d\x3c\x2b\x1a":
        order = "<"
    elif magic == b"\x1a\x2b\x3c\x4d":
        order = ">"
    else:
        raise CaptureError("pcapng section header has no byte-order magic", start + 8)
    total = struct.unpack(order + "I", length_bytes)[0]
    if total % 4 or not 28 <= total <= _MAX_BLOCK:
        raise CaptureError(f"section header block has an impossible length {total}", start + 4)
    rest = reader.read(total - 12, "section header block")
    if struct.unpack_from(order + "I", rest, len(rest) - 4)[0] != total:
        raise CaptureError("block's trailing length differs from its leading length", start + total - 4)
    major = struct.unpack_from(order + "H", rest)[0]
    if major != 1:
        raise CaptureError(f"pcapng version {major} is not 1", start + 12)
    return order


def _linktype(interfaces: list[int], iface: int, offset: int) -> int:
    if iface >= len(interfaces):
        raise CaptureError(f"packet names interface {iface}, which is not described", offset)
    return interfaces[iface]


def _ethernet(frame: bytes) -> int | None:
    if len(frame) < 14:
        return None
    pos = 12
    ethertype = int.from_bytes(frame[12:14], "big")
    while ethertype in _VLAN_TAGS and len(frame) >= pos + 6:
        pos += 4
        ethertype = int.from_bytes(frame[pos : pos + 2], "big")
    return pos + 2 if ethertype == _ETHERTYPE_IPV4 else None


def _sll(frame: bytes) -> int | None:
    ok = len(frame) >= 16 and frame[14:16] == b"\x08\x00"
    return 16 if ok else None


def _sll2(frame: bytes) -> int | None:
    ok = len(frame) >= 20 and frame[0:2] == b"\x08\x00"
    return 20 if ok else None


def _raw(frame: bytes) -> int | None:
    return 0 if frame[:1] and frame[0] >> 4 == 4 else None


#: Where the IPv4 header starts in a frame of each link type, or None when it is not IPv4.
_LINK_OFFSETS: Final[dict[int, Callable[[bytes], int | None]]] = {
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_LINUX_SLL: _sll,
    LINKTYPE_LINUX_SLL2: _sll2,
    LINKTYPE_RAW: _raw,
    LINKTYPE_IPV4: _raw,
}

_IPV4: Final = struct.Struct("!BxHxxHxBxx4s4s")
_UDP_HEADER: Final = struct.Struct("!HHH")


def _extract(
    linktype: int, frame: bytes, counts: CaptureStats, ports: frozenset[int]
) -> tuple[bytes, bytes, int, int, bytes] | None:
    """The addresses, ports and payload of a whole IPv4/UDP datagram on a DHCP port, else None (counted)."""
    locate = _LINK_OFFSETS.get(linktype)
    if locate is None:
        counts.unsupported_link += 1
        return None
    ip = locate(frame)
    if ip is None or len(frame) < ip + 20 or frame[ip] >> 4 != 4:
        counts.not_ipv4 += 1
        return None
    version_ihl, total, frag, proto, src, dst = _IPV4.unpack_from(frame, ip)
    ihl = (version_ihl & 0x0F) * 4
    if ihl < 20 or total < ihl:
        counts.bad_ip += 1
        return None
    if ip + total > len(frame):
        counts.truncated += 1
        return None
    if frag & _MF_OR_OFFSET:
        counts.fragments += 1
        return None
    if proto != _UDP:
        counts.not_udp += 1
        return None
    udp = ip + ihl
    end = ip + total
    if udp + 8 > end:
        counts.bad_ip += 1
        return None
    sport, dport, length = _UDP_HEADER.unpack_from(frame, udp)
    if sport not in ports and dport not in ports:
        counts.other_ports += 1
        return None
    if length < 8 or udp + length > end:
        counts.bad_ip += 1
        return None
    return src, dst, sport, dport, frame[udp + 8 : udp + length]
