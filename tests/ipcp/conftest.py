"""Shared fixtures for the PPP tests: the pppd 2.4.9 capture vectors, read with a tiny pcap reader."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

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
