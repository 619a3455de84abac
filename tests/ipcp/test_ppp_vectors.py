"""pppd 2.4.9's own frames (and the research peer's) from the capture vectors: every frame decodes,
re-encodes byte-exact, and the interesting ones decode to the values the notes describe."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ipcp.frame import Frame, Protocol, decode_frame, encode_frame
from ipcp.ipcp_options import ipcp_registry
from ipcp.lcp_options import (
    LCP_OPTIONS,
    AddressControlFieldCompression,
    AsyncControlCharacterMap,
    MagicNumber,
    ProtocolFieldCompression,
)
from ipcp.option import UnknownOption
from ipcp.packet import (
    LCP_CODES,
    NCP_CODES,
    ConfigureAck,
    ConfigureNak,
    ConfigureReject,
    ConfigureRequest,
    Packet,
    ProtocolReject,
    TerminateAck,
    TerminateRequest,
    decode_header,
    decode_packet,
)
from ipcp.rfc1332 import IpAddress, IpAddresses, IpCompressionProtocol
from ipcp.rfc1877 import PrimaryDns, PrimaryNbns, SecondaryDns, SecondaryNbns
from options.errors import DecodeError

VECTORS = Path(__file__).parent / "vectors" / "pppd-2.4.9"
LINKTYPE_PPP_WITH_DIR = 204


@dataclass(frozen=True)
class CapturedFrame:
    capture: str
    index: int
    from_pppd: bool
    frame: bytes  # the PPP frame: FF 03, protocol, information (no FCS)

    @property
    def name(self) -> str:
        return f"{self.capture}#{self.index}{'<pppd' if self.from_pppd else '<peer'}"


def read_pcap(path: Path) -> list[CapturedFrame]:
    """Classic pcap, either byte order; linktype 204 records are a direction octet then the frame."""
    data = path.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path} is not a classic pcap")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == LINKTYPE_PPP_WITH_DIR, linktype
    out: list[CapturedFrame] = []
    pos = 24
    while pos < len(data):
        _sec, _usec, caplen, _wirelen = struct.unpack_from(endian + "IIII", data, pos)
        record = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        out.append(CapturedFrame(path.stem, len(out), record[0] == 0, record[1:]))
    return out


def all_captured_frames() -> list[CapturedFrame]:
    return [f for path in sorted(VECTORS.glob("*.pcap")) for f in read_pcap(path)]


CapturedTuple = tuple[str, bool, bytes]
"""(name, from_pppd, frame): what the ``captured_frame`` parameter holds, plain so tests need no import."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``captured_frame`` over every frame of every capture, named capture#index<sender."""
    if "captured_frame" in metafunc.fixturenames:
        frames = all_captured_frames()
        metafunc.parametrize(
            "captured_frame", [(f.name, f.from_pppd, f.frame) for f in frames], ids=[f.name for f in frames]
        )


@pytest.fixture(scope="session")
def captures() -> dict[str, list[CapturedTuple]]:
    """Capture name -> its frames in order."""
    out: dict[str, list[CapturedTuple]] = {}
    for f in all_captured_frames():
        out.setdefault(f.capture, []).append((f.name, f.from_pppd, f.frame))
    assert len(out) == 11
    return out


# The research peer used 0x90 for its unknown option; with the default registry it is unknown anyway.
IPCP = ipcp_registry()
MALFORMED_REJECT = "malformed#7<pppd"
EXPECTED_MALFORMED = {
    # research peer: 0x90 with no length octet at the end of its request; pppd's reject copies it
    "malformed#4<peer": "truncated length of option 144",
    MALFORMED_REJECT: "truncated length of option 144",
    # research peer: IP-Address with length 2; pppd rejects it unchanged
    "badlen#4<peer": "truncated IP-Address",
    "badlen#7<pppd": "truncated IP-Address",
}


def _decode(frame: Frame) -> Packet | None:
    if frame.protocol == Protocol.LCP:
        return decode_packet(frame.information, LCP_OPTIONS, codes=LCP_CODES)
    if frame.protocol == Protocol.IPCP:
        return decode_packet(frame.information, IPCP, codes=NCP_CODES)
    return None


def test_every_captured_frame_decodes_and_reencodes(captured_frame: tuple[str, bool, bytes]) -> None:
    name, _from_pppd, wire = captured_frame
    frame = decode_frame(wire)
    assert encode_frame(frame) == wire
    if name in EXPECTED_MALFORMED:
        with pytest.raises(DecodeError, match=EXPECTED_MALFORMED[name]):
            _decode(frame)
        return
    packet = _decode(frame)
    if packet is not None:
        assert packet.encode() == frame.information
    else:
        assert frame.protocol in (Protocol.IPV4, Protocol.CCP, Protocol.IPV6CP)


def test_pppd_malformed_reject_is_a_decode_error(captures: dict[str, list[tuple[str, bool, bytes]]]) -> None:
    """pppd's reply to an option running past the packet: ``04 01 00 05 90`` -- a Configure-Reject whose
    only option is one octet long. The header is sound (Length 5 matches), the option list is not: a
    DecodeError at the 0x90 octet (offset 4 of the packet) naming the missing length octet."""
    name, from_pppd, wire = captures["malformed"][7]
    assert name == MALFORMED_REJECT
    assert from_pppd
    frame = decode_frame(wire)
    assert frame == Frame(Protocol.IPCP, bytes.fromhex("0401000590"))
    header = decode_header(frame.information)
    assert (header.code, header.identifier, header.data_start, header.data_end) == (4, 1, 4, 5)
    with pytest.raises(DecodeError, match="truncated length of option 144") as info:
        decode_packet(frame.information, IPCP, codes=NCP_CODES)
    assert info.value.offset == 5  # where the missing Length octet should have been
    # ... and the research peer's request that provoked it: the same truncated 0x90 at its end.
    _n, _f, request = captures["malformed"][4]
    with pytest.raises(DecodeError, match="truncated length of option 144"):
        decode_packet(decode_frame(request).information, IPCP, codes=NCP_CODES)


def _packets(frames: list[tuple[str, bool, bytes]], from_pppd: bool) -> list[Packet]:
    """The LCP and IPCP packets one side sent, in order."""
    out = []
    for _n, f, w in frames:
        packet = _decode(decode_frame(w)) if f == from_pppd else None
        if packet is not None:
            out.append(packet)
    return out


def _a(text: str) -> IPv4Address:
    return IPv4Address(text)


def test_main_capture_values(captures: dict[str, list[tuple[str, bool, bytes]]]) -> None:
    pppd = _packets(captures["main"], from_pppd=True)
    lcp_request = pppd[0]
    assert isinstance(lcp_request, ConfigureRequest)
    assert [type(o) for o in lcp_request.options] == [
        AsyncControlCharacterMap,
        MagicNumber,
        ProtocolFieldCompression,
        AddressControlFieldCompression,
    ]
    assert lcp_request.options[0] == AsyncControlCharacterMap(0)
    ipcp_request = pppd[2]
    assert ipcp_request == ConfigureRequest(
        1, (IpCompressionProtocol.van_jacobson(15, True), IpAddress(_a("100.64.0.1")))
    )
    assert pppd[3] == ConfigureReject(1, (UnknownOption(0x90, bytes.fromhex("000000070a0900010a090002")),))
    assert pppd[5] == ConfigureNak(
        2,
        (
            IpAddress(_a("100.64.0.2")),
            PrimaryDns(_a("192.0.2.53")),
            SecondaryDns(_a("192.0.2.54")),
            PrimaryNbns(_a("192.0.2.137")),
            SecondaryNbns(_a("192.0.2.137")),
        ),
    )
    assert pppd[-1] == TerminateAck(4)
    peer = _packets(captures["main"], from_pppd=False)
    assert isinstance(peer[3], ProtocolReject)
    assert peer[3].rejected_protocol == Protocol.CCP
    assert peer[-1] == TerminateRequest(4, b"research done")


def test_oldaddrs_pppd_switches_to_type_1(captures: dict[str, list[tuple[str, bool, bytes]]]) -> None:
    pppd = _packets(captures["oldaddrs"], from_pppd=True)
    assert pppd[2] == ConfigureRequest(1, (IpCompressionProtocol.van_jacobson(), IpAddress(_a("100.64.0.1"))))
    assert pppd[3] == ConfigureNak(
        1, (IpAddresses(_a("100.64.0.2"), _a("100.64.0.1")), PrimaryDns(_a("192.0.2.53")))
    )
    assert pppd[4] == ConfigureRequest(2, (IpAddresses(_a("100.64.0.1"), _a("100.64.0.2")),))


def test_badlen_rejected_unchanged(captures: dict[str, list[tuple[str, bool, bytes]]]) -> None:
    """The research peer's ``03 02`` (IP-Address of length 2): framed fine, its data malformed; pppd
    rejects it byte for byte. Strict decoding refuses the request; per-option decoding isolates it."""
    _n, _f, request_wire = captures["badlen"][4]
    info = decode_frame(request_wire).information
    with pytest.raises(DecodeError, match="IP-Address"):
        decode_packet(info, IPCP, codes=NCP_CODES)
    items = list(IPCP.decode_each(info, 4, decode_header(info).data_end))
    assert isinstance(items[0], tuple)
    assert items[0].raw == b"\x03\x02"
    assert items[1:] == [IpCompressionProtocol(0x2D, b"\x0f"), PrimaryDns(_a("0.0.0.0"))]
    _n, _f, reject_wire = captures["badlen"][7]
    reject = decode_frame(reject_wire).information
    assert reject == bytes.fromhex("0401000b03020205002d0f")
    assert [i.raw if isinstance(i, tuple) else i.encode() for i in IPCP.decode_each(reject, 4, 11)] == [
        b"\x03\x02",
        bytes.fromhex("0205002d0f"),
    ]


def test_compressed_headers_decode() -> None:
    """After PFC/ACFC pppd sends ``80 21`` IPCP and ``21`` IP frames."""
    assert decode_frame(bytes.fromhex("80210101000a030664400001")) == Frame(
        Protocol.IPCP, bytes.fromhex("0101000a030664400001")
    )
    assert decode_frame(bytes.fromhex("2145")) == Frame(Protocol.IPV4, b"\x45")
    assert decode_packet(bytes.fromhex("0201000a030664400001"), IPCP, codes=NCP_CODES) == ConfigureAck(
        1, (IpAddress(_a("100.64.0.1")),)
    )
