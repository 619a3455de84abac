"""HDLC-like framing for asynchronous links (RFC 1662 sections 3-4 and 7).

Frames are delimited by Flag 0x7E; 0x7E, 0x7D and every control character flagged in the peer's
ACCM are sent as ``7D (c ^ 0x20)``. The FCS covers everything between the flags before escaping:
FCS-16 (CRC-16/X.25) by default, FCS-32 (the CRC-32 of zlib) when negotiated.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACCM_ALL",
    "ESCAPE",
    "FCS16_GOOD",
    "FCS32_GOOD",
    "FLAG",
    "DeframerCounters",
    "HdlcDeframer",
    "encode_hdlc",
    "fcs16",
    "fcs32",
]

FLAG: Final = 0x7E
ESCAPE: Final = 0x7D
ACCM_ALL: Final = 0xFFFFFFFF
"""The default ACCM: RFC 1662 section 7.1 -- escape all 32 control characters until LCP says otherwise."""

FCS16_GOOD: Final = 0xF0B8
"""RFC 1662 appendix C.2: the running FCS-16 over data and its FCS of a good frame."""
FCS32_GOOD: Final = 0xDEBB20E3
"""RFC 1662 appendix C.3: the running FCS-32 residue of a good frame."""


def _fcs16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_FCS16_TABLE: Final = _fcs16_table()


def fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    """Running FCS-16 (reflected polynomial 0x8408); the transmitted value is ``fcs16(d) ^ 0xFFFF``."""
    table = _FCS16_TABLE
    for byte in data:
        fcs = (fcs >> 8) ^ table[(fcs ^ byte) & 0xFF]
    return fcs


def fcs32(data: bytes, fcs: int = 0xFFFFFFFF) -> int:
    """Running FCS-32; ``zlib.crc32`` computes the same CRC with the complement folded in."""
    return zlib.crc32(data, fcs ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _append_fcs(payload: bytes, fcs_bits: int) -> bytes:
    if fcs_bits == 16:
        return payload + (fcs16(payload) ^ 0xFFFF).to_bytes(2, "little")
    return payload + (fcs32(payload) ^ 0xFFFFFFFF).to_bytes(4, "little")


def _escape_table(accm: int) -> list[bytes]:
    table = [bytes((c,)) for c in range(256)]
    for c in range(32):
        if accm >> c & 1:
            table[c] = bytes((ESCAPE, c ^ 0x20))
    for c in (FLAG, ESCAPE):
        table[c] = bytes((ESCAPE, c ^ 0x20))
    return table


_ESCAPE_TABLES: dict[int, list[bytes]] = {}


def encode_hdlc(payload: bytes, *, accm: int = ACCM_ALL, fcs_bits: int = 16) -> bytes:
    """``7E escaped(payload + FCS) 7E``; the opening flag may be shared with a previous frame's closing one,
    but sending both costs a byte and resynchronises a receiver after line noise (RFC 1662 section 4.4.1)."""
    if fcs_bits not in (16, 32):
        raise ValueError(f"FCS size {fcs_bits} is neither 16 nor 32")
    if not 0 <= accm <= ACCM_ALL:
        raise ValueError(f"ACCM {accm:#x} does not fit 32 bits")
    table = _ESCAPE_TABLES.get(accm)
    if table is None:
        if len(_ESCAPE_TABLES) > 16:
            _ESCAPE_TABLES.clear()
        table = _ESCAPE_TABLES[accm] = _escape_table(accm)
    body = b"".join([table[b] for b in _append_fcs(payload, fcs_bits)])
    return b"\x7e" + body + b"\x7e"


def _unescape(raw: bytes) -> bytes | None:
    """The octets of ``raw`` with escapes removed; None if it ends in an escape (an aborted frame)."""
    out = bytearray()
    pos = 0
    end = len(raw)
    while True:
        found = raw.find(ESCAPE, pos)
        if found < 0:
            out += raw[pos:]
            return bytes(out)
        out += raw[pos:found]
        if found + 1 >= end:
            return None
        out.append(raw[found + 1] ^ 0x20)
        pos = found + 2


@dataclass(slots=True)
class DeframerCounters:
    """Every frame the deframer did not deliver, by reason (RFC 1662: such frames are silently discarded)."""

    good: int = 0
    bad_fcs: int = 0
    aborted: int = 0
    oversized: int = 0
    runt: int = 0


class HdlcDeframer:
    """Streaming receiver: feed arbitrary chunks of line bytes, get good frames (FCS removed).

    Memory is bounded by ``max_frame`` (octets between flags after unescaping, FCS included); a frame
    that grows past it is dropped up to the next flag. Control characters flagged in ``receive_accm``
    that arrive unescaped are removed before the FCS check, as RFC 1662 section 7.1 says ("it may have
    been inserted by intervening data communications equipment").
    """

    __slots__ = ("_buf", "_delete", "_discarding", "_receive_accm", "counters", "fcs_bits", "max_frame")

    def __init__(
        self, max_frame: int = 1500 + 8, *, fcs_bits: int = 16, receive_accm: int = ACCM_ALL
    ) -> None:
        if fcs_bits not in (16, 32):
            raise ValueError(f"FCS size {fcs_bits} is neither 16 nor 32")
        self.max_frame = max_frame
        self.fcs_bits = fcs_bits
        self._receive_accm = 0
        self._delete = b""
        self.receive_accm = receive_accm
        self.counters = DeframerCounters()
        self._buf = bytearray()
        self._discarding = True  # bytes before the first flag are not a frame

    @property
    def receive_accm(self) -> int:
        return self._receive_accm

    @receive_accm.setter
    def receive_accm(self, accm: int) -> None:
        self._receive_accm = accm
        self._delete = bytes(c for c in range(32) if accm >> c & 1)

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by ``data``, in order; partial frames wait for the next chunk."""
        return list(self.frames(data))

    def frames(self, data: bytes) -> Iterator[bytes]:
        """Like :meth:`feed`, but each frame is checked only when the caller asks for it.

        A session changes :attr:`receive_accm` when LCP opens, and the frames after the one that
        opened it -- possibly in the same chunk -- must be read with the new map. Consume it fully.
        """
        parts = data.split(b"\x7e")
        last = len(parts) - 1
        for index, part in enumerate(parts):
            if not self._discarding:
                self._buf += part
                if len(self._buf) > 2 * self.max_frame:  # escaped size can be at most twice the octets
                    self._drop_oversized()
            if index < last:  # a flag follows this part
                raw = bytes(self._buf) if not self._discarding else b""
                self._buf.clear()
                self._discarding = False
                frame = self._finish(raw)
                if frame is not None:
                    yield frame

    def _drop_oversized(self) -> None:
        self.counters.oversized += 1
        self._buf.clear()
        self._discarding = True

    def _finish(self, raw: bytes) -> bytes | None:
        if not raw:
            return None  # 7E 7E: back-to-back flags, not a frame
        if self._delete:
            raw = raw.translate(None, self._delete)
        octets = _unescape(raw)
        if octets is None:
            self.counters.aborted += 1
            return None
        fcs_len = self.fcs_bits // 8
        if len(octets) > self.max_frame:
            self.counters.oversized += 1
            return None
        if len(octets) < fcs_len + 2:
            self.counters.runt += 1
            return None
        good = fcs16(octets) == FCS16_GOOD if self.fcs_bits == 16 else fcs32(octets) == FCS32_GOOD
        if not good:
            self.counters.bad_fcs += 1
            return None
        self.counters.good += 1
        return octets[:-fcs_len]
