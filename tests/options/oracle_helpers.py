"""Shared helpers for the codec's vector and oracle tests.

Locating the recorded vectors (``shared/`` beside the repository), parsing the
``*.vectors.txt`` files and dhcpcd's configuration files, reading UDP payloads out of
Ethernet pcaps and writing our own messages into one, and running tshark once per batch.
Nothing here decides an outcome: the tests do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt
import pytest

__all__ = [
    "CapturedPayload",
    "DhcpcdToken",
    "TsharkPacket",
    "Vector",
    "dhcpcd_token",
    "dhcpcd_vectors_dir",
    "read_pcap_payloads",
    "read_vectors",
    "require_tshark",
    "run_tshark",
    "shared_dir",
    "shared_path",
    "write_pcap",
]

DHCP_PORTS = frozenset({67, 68})


def shared_path() -> Path:
    """Where ``shared/`` must be: beside the repository (``/work/shared`` for ``/work/main``).

    CI clones the repository with ``shared/`` next to it. This only computes the path; use
    :func:`shared_dir` in a test body so a missing directory fails that test.
    """
    return Path(__file__).resolve().parents[2].parent / "shared"


def shared_dir() -> Path:
    """``shared/``, or FAIL: missing vectors are a broken checkout, never a reason to skip."""
    path = shared_path()
    if not path.is_dir():
        pytest.fail(
            f"shared test vectors not found at {path}: check out the shared/ directory beside the "
            "repository (it holds the captures from real peers these tests replay)",
            pytrace=False,
        )
    return path


def dhcpcd_vectors_dir() -> Path:
    path = shared_dir() / "vectors" / "dhcpcd-9.4.1"
    if not path.is_dir():
        pytest.fail(f"dhcpcd vectors missing: {path} is not a directory", pytrace=False)
    return path


# ---------------------------------------------------------------------------------------------
# *.vectors.txt: a comment line naming the frame, then the hex UDP payload.

_COMMENT = re.compile(
    r"^# frame (?P<frame>\d+) (?P<type>[A-Z]+) proto (?P<proto>\d+) "
    r"(?:key=(?P<key>[0-9a-f]+)|nonce=(?P<nonce>[0-9a-f]+)) "
    r"mac_offset_in_udp_payload=(?P<mac>\d+)$"
)


@dataclass(frozen=True, slots=True)
class Vector:
    """One recorded payload whose MAC verifies with ``key`` (protocols 1, 2) or ``nonce`` (3)."""

    path: Path  # the .vectors.txt file
    source: str  # file stem, e.g. "06_fr_delayed"
    frame: int  # frame number in the pcap of the same stem
    message_type: str  # as the comment spells it: OFFER, REQUEST, ACK, FORCERENEW, ...
    protocol: int
    key: bytes | None
    nonce: bytes | None
    mac_offset: int
    payload: bytes

    @property
    def name(self) -> str:
        return f"{self.source}#{self.frame}-{self.message_type}"


def read_vectors(path: Path) -> list[Vector]:
    """Parse one ``*.vectors.txt``; any line that fits neither form is an error, not skipped."""
    vectors: list[Vector] = []
    pending: re.Match[str] | None = None
    source = path.name.removesuffix(".vectors.txt")
    for number, raw in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if pending is not None:
                raise ValueError(f"{path}:{number}: comment follows a comment with no payload")
            pending = _COMMENT.match(line)
            if pending is None:
                raise ValueError(f"{path}:{number}: unrecognised vector comment {line!r}")
            continue
        if pending is None:
            raise ValueError(f"{path}:{number}: payload without a preceding comment")
        key, nonce = pending["key"], pending["nonce"]
        vectors.append(
            Vector(
                path=path,
                source=source,
                frame=int(pending["frame"]),
                message_type=pending["type"],
                protocol=int(pending["proto"]),
                key=bytes.fromhex(key) if key else None,
                nonce=bytes.fromhex(nonce) if nonce else None,
                mac_offset=int(pending["mac"]),
                payload=bytes.fromhex(line),
            )
        )
        pending = None
    if pending is not None:
        raise ValueError(f"{path}: last comment has no payload")
    return vectors


# ---------------------------------------------------------------------------------------------
# dhcpcd.conf authtoken lines: authtoken <secret id> "<realm>" <expiry> "<key>"

_AUTHTOKEN = re.compile(
    r'^authtoken\s+(?P<sid>\S+)\s+"(?P<realm>[^"]*)"\s+\S+\s+"(?P<key>(?:[^"\\]|\\.)*)"\s*$'
)
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\(.)")


@dataclass(frozen=True, slots=True)
class DhcpcdToken:
    secret_id: int
    realm: bytes
    key: bytes


def _unescape_dhcpcd(text: str) -> bytes:
    def one(match: re.Match[str]) -> str:
        return chr(int(match[1], 16)) if match[1] else match[2]

    return _ESCAPE.sub(one, text).encode("latin-1")


def dhcpcd_token(conf: Path) -> DhcpcdToken | None:
    """The one ``authtoken`` of a dhcpcd.conf (secret ID decimal or 0x..., key as a quoted string)."""
    tokens = [
        DhcpcdToken(int(m["sid"], 0), m["realm"].encode("ascii"), _unescape_dhcpcd(m["key"]))
        for m in (_AUTHTOKEN.match(line.strip()) for line in conf.read_text(encoding="ascii").splitlines())
        if m is not None
    ]
    if len(tokens) > 1:
        raise ValueError(f"{conf}: more than one authtoken")
    return tokens[0] if tokens else None


# ---------------------------------------------------------------------------------------------
# pcaps


@dataclass(frozen=True, slots=True)
class CapturedPayload:
    source: str
    frame: int  # 1-based, as tshark and the vector comments number frames
    sport: int
    dport: int
    payload: bytes

    @property
    def name(self) -> str:
        return f"{self.source}#{self.frame}"


def read_pcap_payloads(path: Path) -> list[CapturedPayload]:
    """UDP payloads on ports 67/68 of an Ethernet (linktype 1) capture, with their frame numbers."""
    out: list[CapturedPayload] = []
    with path.open("rb") as handle:
        reader: Any = dpkt.pcap.Reader(handle)
        if reader.datalink() != dpkt.pcap.DLT_EN10MB:
            raise ValueError(f"{path}: linktype {reader.datalink()} is not Ethernet")
        for frame, (_ts, buf) in enumerate(reader, 1):
            eth: Any = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            if udp.sport in DHCP_PORTS and udp.dport in DHCP_PORTS:
                out.append(CapturedPayload(path.stem, frame, udp.sport, udp.dport, bytes(udp.data)))
    return out


_SERVER_MAC = bytes.fromhex("020000000001")
_CLIENT_MAC = bytes.fromhex("020000000002")


def write_pcap(path: Path, payloads: Iterable[bytes], *, sport: int = 67, dport: int = 68) -> int:
    """Write each payload as Ethernet/IPv4/UDP ``sport``->``dport`` (default 67->68); return the count."""
    count = 0
    with path.open("wb") as handle:
        writer: Any = dpkt.pcap.Writer(handle, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
        for index, payload in enumerate(payloads):
            udp: Any = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
            udp.ulen = 8 + len(payload)
            ip: Any = dpkt.ip.IP(
                src=socket.inet_aton("192.0.2.1"),
                dst=socket.inet_aton("192.0.2.2"),
                p=dpkt.ip.IP_PROTO_UDP,
                ttl=64,
                id=index & 0xFFFF,
                data=udp,
            )
            eth: Any = dpkt.ethernet.Ethernet(
                dst=_CLIENT_MAC, src=_SERVER_MAC, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
            )
            writer.writepkt(bytes(eth), ts=1_700_000_000 + index)
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# tshark


def require_tshark() -> str:
    """The tshark binary; absent it FAILS under CI (env CI set) and skips elsewhere."""
    path = shutil.which("tshark")
    if path is None:
        reason = "tshark is not installed (apt-get install tshark)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the tshark oracle", pytrace=False)
        pytest.skip(reason)
    return path


@dataclass(frozen=True, slots=True)
class TsharkOption:
    """One option instance as tshark dissected it: code, raw value, where it sits, decoded fields."""

    code: int
    value: bytes
    offset: int  # of the option's code octet in the DHCP payload
    fields: dict[str, Any]

    @property
    def area(self) -> str:
        """Which field holds the instance: ``options``, ``file`` or ``sname`` (overload)."""
        if self.offset >= 240:
            return "options"
        return "file" if self.offset >= 108 else "sname"

    def field(self, name: str) -> Any:
        return self.fields.get(name)


_AREA_ORDER = {"options": 0, "file": 1, "sname": 2}


@dataclass(frozen=True, slots=True)
class TsharkPacket:
    """The ``dhcp`` layer of one frame: header fields and option instances.

    ``options`` is in RFC 3396 order (options field, then ``file``, then ``sname``, each by
    offset), whatever order tshark's tree shows them in.
    """

    header: dict[str, Any]
    options: tuple[TsharkOption, ...]
    layer: dict[str, Any]

    def instances(self, code: int) -> list[TsharkOption]:
        return [o for o in self.options if o.code == code]

    def payload(self, code: int) -> bytes | None:
        """RFC 3396 view: the instances of ``code`` concatenated, None when absent."""
        found = self.instances(code)
        return b"".join(o.value for o in found) if found else None

    def payloads(self) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for option in self.options:
            out[option.code] = out.get(option.code, b"") + option.value
        return out


def as_list(value: Any) -> list[Any]:
    """tshark's ``--no-duplicate-keys`` JSON gives a list for repeated keys, a scalar otherwise."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _raw_entries(value: Any) -> list[Any]:
    # "<field>_raw" is [hex, offset, length, bitmask, type]; repeated, a list of those.
    if value is None:
        return []
    return [value] if isinstance(value[0], str) else list(value)


def _collect_options(node: dict[str, Any], base: int, out: list[TsharkOption]) -> None:
    raws = _raw_entries(node.get("dhcp.option.type_raw"))
    trees = as_list(node.get("dhcp.option.type_tree"))
    for raw, tree in zip(raws, trees, strict=True):
        whole = bytes.fromhex(raw[0])
        code = whole[0]
        if code not in (0, 255):
            value_raw = tree.get("dhcp.option.value_raw")
            value = bytes.fromhex(value_raw[0]) if value_raw is not None else whole[2:]
            out.append(TsharkOption(code, value, int(raw[1]) - base, tree))
        for child in tree.values():  # option 52 nests the file/sname options in subtrees
            if isinstance(child, dict) and "dhcp.option.type_raw" in child:
                _collect_options(child, base, out)


def _parse_dhcp_layer(layer: dict[str, Any]) -> TsharkPacket:
    header = {k: v for k, v in layer.items() if not k.startswith("dhcp.option") and not k.endswith("_raw")}
    base = int(layer["dhcp.type_raw"][1])  # frame offset of the op octet
    options: list[TsharkOption] = []
    _collect_options(layer, base, options)
    options.sort(key=lambda o: (_AREA_ORDER[o.area], o.offset))
    return TsharkPacket(header, tuple(options), layer)


def run_tshark(pcap: Path, *, timeout: float = 60.0) -> list[TsharkPacket | None]:
    """Dissect every frame of ``pcap`` in one tshark run; None for a frame with no dhcp layer.

    JSON with ``--no-duplicate-keys`` keeps repeated fields (several options) as lists and ``-x``
    adds the raw bytes of every field, so option values are compared byte for byte.
    """
    tshark = require_tshark()
    result = subprocess.run(
        [tshark, "-n", "-r", str(pcap), "-T", "json", "--no-duplicate-keys", "-x"],
        capture_output=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"tshark failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    frames: Sequence[Any] = json.loads(result.stdout)
    out: list[TsharkPacket | None] = []
    for frame in frames:
        layer = frame["_source"]["layers"].get("dhcp")
        out.append(None if layer is None else _parse_dhcp_layer(layer))
    return out
