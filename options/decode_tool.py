"""``ce-autoconf decode``: DHCP messages from hex, raw files or captures, as a table or JSON Lines.

The pipeline is three small steps so a capture of any size streams through in constant
memory: :func:`iter_inputs` turns arguments into payloads (or per-item failures),
:class:`Decoder` decodes each payload and checks its option 90 (remembering RFC 6704
nonces from DHCPACKs), and the renderers print one block or one JSON line per message.
A malformed message is one error line; the tool goes on with the next.

Keys and nonces given by the user are never printed, not even in errors.
"""

from __future__ import annotations

import argparse
import functools
import json
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any, BinaryIO, Final, NamedTuple, TextIO

from options.errors import DecodeError
from options.message import MAX_MESSAGE_SIZE, DhcpMessage, decode_message
from options.pcap import CaptureError, CaptureStats, is_capture, read_capture
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.rfc2132 import MessageType
from options.rfc3118 import AUTHENTICATION, AuthAlgorithm, Authentication, AuthProtocol, StaticKeys, verify
from options.rfc3396 import scan_field
from options.rfc6704 import NONCE_SIZE, TYPE_HMAC, nonce_of
from options.spec import OptionSpec
from options.vpn import registry_with_vpn_codes

__all__ = [
    "AuthReport",
    "CaptureSummary",
    "DecodeConfig",
    "DecodedMessage",
    "Decoder",
    "Failure",
    "Payload",
    "UsageError",
    "add_arguments",
    "config_from_args",
    "iter_inputs",
    "parse_hex_line",
    "parse_key",
    "run",
    "run_decode",
]

#: Clients whose RFC 6704 nonce is remembered; the oldest is forgotten beyond this.
MAX_NONCE_CLIENTS: Final = 65536
#: A hex line longer than this is refused rather than read into memory.
MAX_LINE: Final = 4 * MAX_MESSAGE_SIZE
_HEAD: Final = 4  # enough to tell a capture's magic number, and binary from text

HELP_EPILOG: Final = """\
inputs:
  Each INPUT is a file or '-' for stdin. pcap and pcapng files are recognised by their
  magic number (link types Ethernet, Linux cooked SLL/SLL2, raw IPv4; UDP port 67/68;
  IP fragments are skipped and counted). Other files are one raw DHCP payload when
  binary, else hex text: one message per line, whitespace and colons ignored, '#'
  starts a comment (so *.vectors.txt files work as they are). --hex gives a message on
  the command line. With no INPUT and no --hex, stdin is read.

output:
  A table by default; with --json one JSON object per message per line, with the RFC
  2131 header fields, "message_type" (e.g. "DHCPACK", null for BOOTP), "options" (a list
  of {code, name, value}; unknown options have name "unknown" and a hex value), "auth"
  (null without option 90) and "source" (file:frame N, file:line N, hex:N).
  xid is a number; chaddr is the hex of its hlen significant octets; sname and file are
  text without trailing NULs, or hex (trailing NULs stripped) when they hold options
  (option 52) or bytes that are not printable text. A malformed message gives
  {"source", "error", "offset"}: offset is the byte in the DHCP payload, or the column of
  a bad hex digit.

authentication:
  --key SECRET_ID:HEX_KEY (repeatable; SECRET_ID decimal or 0x-hex) checks RFC 3118
  delayed authentication (protocols 1 and 2). RFC 6704 FORCERENEWs are checked with the
  nonce of the last DHCPACK to the same chaddr seen earlier in the input, or with a
  --nonce. Every message with option 90 gets an auth report; "valid" is true only for a
  MAC that was checked and matched.

exit status:
  0 when every input was read (malformed messages and failed MACs included), 1 when an
  input could not be read or, with --strict, when a message was malformed or a MAC did
  not verify, 2 for a usage error.
"""


class UsageError(ValueError):
    """A bad command-line argument; the message never contains key material."""


# --------------------------------------------------------------------------- arguments


def parse_secret_id(text: str) -> int:
    """A 32-bit secret ID, decimal or 0x-hex (as dhcpcd's ``authtoken`` accepts)."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise UsageError(f"secret ID {text!r} is not a decimal or 0x-hex number") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise UsageError(f"secret ID {text!r} is not a 32-bit number")
    return value


def parse_key(text: str, where: str) -> tuple[int, bytes]:
    """``SECRET_ID:HEX_KEY`` to ``(secret_id, key)``; errors name ``where`` and never the key."""
    sid_text, sep, key_text = text.partition(":")
    if not sep:
        raise UsageError(f"{where}: expected SECRET_ID:HEX_KEY (no ':' found)")
    try:
        sid = parse_secret_id(sid_text.strip())
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    digits = "".join(key_text.split()).replace(":", "")
    if not digits:
        raise UsageError(f"{where}: the key for secret ID {sid:#x} is empty")
    if len(digits) % 2 or any(c not in string.hexdigits for c in digits):
        raise UsageError(f"{where}: the key for secret ID {sid:#x} is not an even number of hex digits")
    return sid, bytes.fromhex(digits)


def parse_nonce(text: str, where: str) -> bytes:
    """A 16-octet RFC 6704 nonce in hex; errors never echo it."""
    digits = "".join(text.split()).replace(":", "")
    if len(digits) != 2 * NONCE_SIZE or any(c not in string.hexdigits for c in digits):
        raise UsageError(f"{where}: a nonce is {NONCE_SIZE} octets, {2 * NONCE_SIZE} hex digits")
    return bytes.fromhex(digits)


def parse_registry_codes(text: str) -> OptionRegistry:
    """``PEER_CE,VPN_SERVER`` codes to a registry with the draft's options moved there."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise UsageError("--registry-codes: expected two codes, PEER_CE,VPN_SERVER (e.g. 230,231)")
    try:
        peer, server = (int(p, 0) for p in parts)
        return registry_with_vpn_codes(peer, server)
    except ValueError as exc:
        raise UsageError(f"--registry-codes: {exc}") from None


def _keys_from_file(path: str) -> list[tuple[int, bytes]]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--key-file {path}: cannot read ({type(exc).__name__})") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            found.append(parse_key(text, f"--key-file {path} line {number}"))
    return found


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Everything ``decode`` was asked to do; ``repr`` leaves keys and nonces out."""

    inputs: tuple[str, ...] = ()
    hex_literals: tuple[str, ...] = ()
    json: bool = False
    keys: Mapping[int, bytes] = field(default_factory=dict, repr=False)
    nonces: tuple[bytes, ...] = field(default=(), repr=False)
    registry: OptionRegistry = DEFAULT_REGISTRY
    strict: bool = False
    quiet: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``decode`` subcommand's options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HELP_EPILOG
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="pcap, pcapng, raw or hex file; '-' = stdin"
    )
    parser.add_argument(
        "--hex", dest="hex_literals", action="append", default=[], metavar="STRING", help="a message in hex"
    )
    parser.add_argument("--json", action="store_true", help="JSON Lines: one object per message")
    parser.add_argument(
        "--key",
        dest="keys",
        action="append",
        default=[],
        metavar="SECRET_ID:HEX_KEY",
        help="an RFC 3118 key (repeatable)",
    )
    parser.add_argument(
        "--key-file",
        dest="key_files",
        action="append",
        default=[],
        metavar="PATH",
        help="keys as SECRET_ID:HEX_KEY lines ('#' comments), kept off the command line",
    )
    parser.add_argument(
        "--nonce", dest="nonces", action="append", default=[], metavar="HEX", help="an RFC 6704 nonce"
    )
    parser.add_argument(
        "--registry-codes",
        metavar="PEER_CE,VPN_SERVER",
        help="decode the draft's VPN options at these site-specific codes (default 224,225)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if a message is malformed or a MAC does not verify"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no capture statistics or summary on stderr"
    )


def config_from_args(args: argparse.Namespace) -> DecodeConfig:
    """Validate parsed arguments; raises :class:`UsageError`."""
    pairs = [parse_key(text, f"--key #{i}") for i, text in enumerate(args.keys, 1)]
    for path in args.key_files:
        pairs.extend(_keys_from_file(path))
    keys: dict[int, bytes] = {}
    for sid, key in pairs:
        if sid in keys and keys[sid] != key:
            raise UsageError(f"secret ID {sid:#x} is given two different keys")
        keys[sid] = key
    nonces = tuple(parse_nonce(text, f"--nonce #{i}") for i, text in enumerate(args.nonces, 1))
    registry = DEFAULT_REGISTRY if args.registry_codes is None else parse_registry_codes(args.registry_codes)
    return DecodeConfig(
        inputs=tuple(args.inputs),
        hex_literals=tuple(args.hex_literals),
        json=args.json,
        keys=keys,
        nonces=nonces,
        registry=registry,
        strict=args.strict,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    """Entry point for the command-line dispatcher; raises :class:`UsageError` for bad arguments."""
    config = config_from_args(args)
    if not config.inputs and not config.hex_literals and stdin.isatty():
        raise UsageError("no input: give files, '-' for stdin, or --hex")
    return run_decode(config, stdout, stderr, stdin)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Payload:
    """One candidate DHCP payload and where it came from."""

    source: str
    data: bytes
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    """Something that is not a message: a bad hex line (``fatal`` False) or an unreadable input."""

    source: str
    reason: str
    offset: int | None
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """The counters of one capture, once it has been read to the end (or to its damage)."""

    source: str
    stats: CaptureStats


Item = Payload | Failure | CaptureSummary


class _Rewound:
    """A stream whose first bytes were read to sniff its format, served again first."""

    __slots__ = ("_head", "_stream")

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int, /) -> bytes:
        head = self._head
        if not head:
            return self._stream.read(size)
        part, self._head = head[:size], head[size:]
        return part + self._stream.read(size - len(part)) if len(part) < size else part

    def readline(self, limit: int) -> bytes:
        head = self._head
        if not head:
            return self._stream.readline(limit)
        newline = head.find(b"\n", 0, limit)
        cut = newline + 1 if newline >= 0 else min(len(head), limit)
        line, self._head = head[:cut], head[cut:]
        if newline >= 0 or len(line) >= limit:
            return line
        return line + self._stream.readline(limit - len(line))


def _sniff(stream: BinaryIO) -> bytes:
    """The first few bytes, without waiting for more than a pipe has ready once we have four."""
    read1 = getattr(stream, "read1", None)
    head = b""
    while len(head) < _HEAD:
        chunk = read1(65536) if read1 is not None else stream.read(_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head


_TEXT_BYTES: Final = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\r\f\v")


def _is_text(head: bytes) -> bool:
    return all(b in _TEXT_BYTES for b in head[:4096])


_HEX_IGNORED: Final = frozenset(" \t\r\n\f\v:")
_HEX_DIGITS: Final = frozenset(string.hexdigits)


def parse_hex_line(line: str) -> bytes | None:
    """One message from a line of hex (None for a blank or comment line).

    Raises :class:`DecodeError` whose offset is the column of the offending character.
    """
    body = line.split("#", 1)[0]
    start = len(body) - len(body.lstrip())
    if body[start : start + 2] in ("0x", "0X"):
        start += 2
    digits: list[str] = []
    for column in range(start, len(body)):
        char = body[column]
        if char in _HEX_DIGITS:
            digits.append(char)
        elif char not in _HEX_IGNORED:
            raise DecodeError(f"not a hex digit: {char!a}", column)
    if not digits:
        return None
    if len(digits) % 2:
        raise DecodeError(f"odd number of hex digits ({len(digits)})", len(body.rstrip()))
    return bytes.fromhex("".join(digits))


def iter_inputs(config: DecodeConfig, stdin: BinaryIO) -> Iterator[Item]:
    """Every payload of every input, in order, read lazily."""
    for path in config.inputs or (() if config.hex_literals else ("-",)):
        yield from _iter_file(path, stdin)
    for number, text in enumerate(config.hex_literals, 1):
        yield from _hex_item(f"hex:{number}", text)


def _iter_file(path: str, stdin: BinaryIO) -> Iterator[Item]:
    label = "<stdin>" if path == "-" else path
    if path == "-":
        yield from _iter_stream(label, stdin)
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after a generator's lifetime
    except OSError as exc:
        yield Failure(label, f"cannot open: {exc.strerror or exc}", None, fatal=True)
        return
    try:
        yield from _iter_stream(label, handle)
    finally:
        handle.close()


def _iter_stream(label: str, stream: BinaryIO) -> Iterator[Item]:
    try:
        head = _sniff(stream)
    except OSError as exc:
        yield Failure(label, f"cannot read: {exc.strerror or exc}", None, fatal=True)
        return
    source = _Rewound(head, stream)
    try:
        if is_capture(head):
            yield from _capture_items(label, source)
        elif _is_text(head):
            yield from _text_items(label, source)
        else:
            data = source.read(MAX_MESSAGE_SIZE + 1)
            yield Payload(label, data)
    except OSError as exc:
        yield Failure(label, f"cannot read: {exc.strerror or exc}", None, fatal=True)


def _capture_items(label: str, source: _Rewound) -> Iterator[Item]:
    stats = CaptureStats()
    try:
        for dgram in read_capture(source, stats):
            detail = f"{dgram.src}:{dgram.sport} > {dgram.dst}:{dgram.dport}"
            yield Payload(f"{label}:frame {dgram.frame}", dgram.payload, detail)
    except CaptureError as exc:
        yield Failure(label, f"damaged capture: {exc.reason}", exc.offset, fatal=True)
    yield CaptureSummary(label, stats)


def _text_items(label: str, source: _Rewound) -> Iterator[Item]:
    number = 0
    while True:
        raw = source.readline(MAX_LINE)
        if not raw:
            return
        number += 1
        where = f"{label}:line {number}"
        if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = source.readline(MAX_LINE)
            yield Failure(where, f"line longer than {MAX_LINE} characters", MAX_LINE)
            continue
        yield from _hex_item(where, raw.decode("latin-1"))


def _hex_item(where: str, line: str) -> Iterator[Item]:
    try:
        data = parse_hex_line(line)
    except DecodeError as exc:
        yield Failure(where, f"bad hex: {exc.reason}", exc.offset)
        return
    if data is not None:
        yield Payload(where, data)


# --------------------------------------------------------------------------- decoding

_PROTOCOL_NAMES: Final[dict[int, str]] = {
    AuthProtocol.CONFIGURATION_TOKEN: "token",
    AuthProtocol.DELAYED: "delayed",
    AuthProtocol.DELAYED_REALM: "delayed-realm",
    AuthProtocol.RECONFIGURE_KEY: "reconfigure-key",
}
_ALGORITHM_NAMES: Final[dict[int, str]] = {AuthAlgorithm.NONE: "none", AuthAlgorithm.HMAC_MD5: "hmac-md5"}


@dataclass(frozen=True, slots=True)
class AuthReport:
    """The outcome of checking one message's option 90.

    ``checked`` says a MAC was there to check: ``valid`` False with ``checked`` False is a
    message that carries no MAC (a DISCOVER, a nonce delivery), not a forgery.
    """

    auth: Authentication
    valid: bool
    reason: str
    checked: bool

    def to_json(self) -> dict[str, Any]:
        a = self.auth
        return {
            "protocol": a.protocol,
            "algorithm": a.algorithm,
            "rdm": a.rdm,
            "replay_detection": a.replay_detection,
            "secret_id": a.secret_id,
            "valid": self.valid,
            "reason": self.reason,
        }

    def summary(self) -> str:
        """The table's auth line, without the leading ``auth:``."""
        a = self.auth
        parts = [
            f"{_PROTOCOL_NAMES.get(a.protocol, 'protocol')}({a.protocol})",
            _ALGORITHM_NAMES.get(a.algorithm, f"algorithm({a.algorithm})"),
            f"rdm={a.rdm}",
            f"replay={a.replay_detection}",
        ]
        if a.realm:
            parts.append(f"realm={_ascii(a.realm.decode('utf-8', 'backslashreplace'))}")
        if a.secret_id is not None:
            parts.append(f"secret_id={a.secret_id:#x}")
        if a.protocol == AuthProtocol.RECONFIGURE_KEY:
            parts.append(f"type={a.information[0]}")
        if self.valid:
            detail = self.reason.removeprefix("valid").strip()
            parts.append(f"VALID {detail}" if detail else "VALID")
        else:
            parts.append(f"{'INVALID' if self.checked else 'UNVERIFIED'}: {self.reason}")
        return " ".join(parts)


class OptionView(NamedTuple):
    """One option for display: its decoded value, or its bytes when the registry does not know it."""

    code: int
    name: str
    spec: OptionSpec[Any] | None
    value: Any

    def to_json(self) -> Any:
        if self.spec is None:
            return bytes(self.value).hex()
        return self.spec.to_json(self.value)


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """A decoded message with what the renderers need."""

    source: str
    detail: str
    message: DhcpMessage
    options: tuple[OptionView, ...]
    auth: AuthReport | None
    size: int
    overload: int = 0


class Decoder:
    """Decodes payloads in input order; keeps the RFC 6704 nonces DHCPACKs hand out, per chaddr."""

    def __init__(self, config: DecodeConfig) -> None:
        self._registry = config.registry
        self._keys = StaticKeys(dict(config.keys))
        self._sids = frozenset(config.keys)
        self._explicit_nonces = config.nonces
        self._nonces: dict[tuple[int, bytes], tuple[bytes, str]] = {}
        self.messages = 0
        self.malformed = 0
        self.auth_valid = 0
        self.auth_failed = 0
        self.auth_unchecked = 0

    def decode(self, item: Payload) -> DecodedMessage:
        """Decode one payload; raises :class:`DecodeError` for a malformed one (counted)."""
        try:
            msg = decode_message(item.data, self._registry, strict=True)
            overload = _overload(msg)
            views = self._views(msg, overload)
        except DecodeError:
            self.malformed += 1
            raise
        self.messages += 1
        auth = None
        for view in views:
            if view.code == 90:
                value = view.value
                if not isinstance(value, Authentication):  # a registry with its own option 90
                    value = AUTHENTICATION.decode(msg.options[90])
                auth = self._check(msg, item, value)
        if auth is not None:
            if auth.valid:
                self.auth_valid += 1
            elif auth.checked:
                self.auth_failed += 1
            else:
                self.auth_unchecked += 1
        return DecodedMessage(item.source, item.detail, msg, views, auth, len(item.data), overload)

    def _views(self, msg: DhcpMessage, overload: int) -> tuple[OptionView, ...]:
        get = self._registry.get
        views = []
        for code, payload in msg.options.items_list():
            spec = get(code)
            if spec is None:
                views.append(OptionView(code, "unknown", None, payload))
            else:
                views.append(OptionView(code, spec.name, spec, spec.decode(payload)))
        if overload and 52 not in msg.options:
            registry = self._registry
            spec = registry.get(52)
            value = spec.decode(bytes((overload,))) if spec is not None else bytes((overload,))
            name = spec.name if spec is not None else "unknown"
            views.insert(_overload_position(msg), OptionView(52, name, spec, value))
        return tuple(views)

    def _check(self, msg: DhcpMessage, item: Payload, auth: Authentication) -> AuthReport:
        protocol = auth.protocol
        if protocol in (AuthProtocol.DELAYED, AuthProtocol.DELAYED_REALM) and auth.has_mac:
            sid = auth.secret_id
            if sid not in self._sids:
                return AuthReport(auth, False, f"no key for secret ID {sid:#x} (give --key)", True)
            check = verify(msg.wire, self._keys)
            return AuthReport(auth, check.valid, check.reason, True)
        if protocol == AuthProtocol.RECONFIGURE_KEY:
            return self._check_reconfigure(msg, item, auth)
        check = verify(msg.wire, self._keys)
        return AuthReport(auth, check.valid, check.reason, auth.has_mac)

    def _check_reconfigure(self, msg: DhcpMessage, item: Payload, auth: Authentication) -> AuthReport:
        client = (msg.htype, msg.hardware_address)
        nonce = nonce_of(auth)
        if nonce is not None:
            if msg.message_type != MessageType.DHCPACK:
                return AuthReport(auth, False, "carries an RFC 6704 nonce outside a DHCPACK (no MAC)", False)
            self._remember(client, nonce, item.source)
            return AuthReport(auth, False, "carries an RFC 6704 nonce (no MAC); kept for FORCERENEWs", False)
        if auth.information[0] != TYPE_HMAC:  # pragma: no cover - the spec admits types 1 and 2 only
            return AuthReport(auth, False, "unknown reconfigure key type", False)
        candidates: list[tuple[bytes, str]] = []
        learned = self._nonces.get(client)
        if learned is not None:
            candidates.append(learned)
        candidates.extend((n, f"--nonce #{i}") for i, n in enumerate(self._explicit_nonces, 1))
        if not candidates:
            return AuthReport(
                auth, False, "no RFC 6704 nonce known for this client (no earlier DHCPACK, no --nonce)", True
            )
        reason = "MAC mismatch"
        for key, origin in candidates:
            check = verify(msg.wire, nonce=key)
            if check.valid:
                return AuthReport(auth, True, f"valid (nonce from {origin})", True)
            reason = check.reason
        return AuthReport(auth, False, reason, True)

    def _remember(self, client: tuple[int, bytes], nonce: bytes, source: str) -> None:
        nonces = self._nonces
        nonces.pop(client, None)
        if len(nonces) >= MAX_NONCE_CLIENTS:
            del nonces[next(iter(nonces))]
        nonces[client] = (nonce, source)


_FILE: Final = slice(108, 236)
_SNAME: Final = slice(44, 108)


def _overload(msg: DhcpMessage) -> int:
    """Option 52's value as received (the codec may drop it once it has read the fields)."""
    payload = msg.options.get(52)
    if payload is not None:
        return payload[0]
    wire = msg.wire
    if len(wire) < 240 or (wire[_FILE] == msg.file and wire[_SNAME] == msg.sname):
        return 0
    spans: list[tuple[int, int, int]] = []
    scan_field(wire, 240, len(wire), spans)
    return next((wire[s] for c, s, e in spans if c == 52 and e - s == 1), 0)


def _overload_position(msg: DhcpMessage) -> int:
    """Where option 52 stood among the distinct option codes, in first-seen order."""
    spans: list[tuple[int, int, int]] = []
    scan_field(msg.wire, 240, len(msg.wire), spans)
    seen: list[int] = []
    for code, _, _ in spans:
        if code == 52:
            break
        if code not in seen:
            seen.append(code)
    return len(seen)


# --------------------------------------------------------------------------- rendering


def _ascii(text: str) -> str:
    """Printable ASCII only, so a terminal never sees control characters from the wire."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if " " <= char <= "~":
            out.append(char)
        else:
            code = ord(char)
            if 0xDC80 <= code <= 0xDCFF:  # a byte kept by surrogateescape
                code -= 0xDC00
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "".join(out)


def _json_safe(value: Any) -> Any:
    """Replace surrogate-escaped bytes in strings, which strict JSON parsers refuse."""
    if isinstance(value, str):
        return (
            value
            if value.isascii()
            else value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        )
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _field_text(raw: bytes, wire_field: bytes, overloaded: bool) -> str:
    """sname/file: text up to the first NUL, or hex when the field holds options or binary."""
    if overloaded:
        return wire_field.rstrip(b"\0").hex()
    text = raw.rstrip(b"\0")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return text.hex()
    return decoded if decoded.isprintable() else text.hex()


def _fields(decoded: DecodedMessage) -> tuple[str, str]:
    msg = decoded.message
    overload = decoded.overload
    wire = msg.wire
    sname = _field_text(msg.sname, wire[_SNAME] if wire else msg.sname, bool(overload & 2))
    file = _field_text(msg.file, wire[_FILE] if wire else msg.file, bool(overload & 1))
    return sname, file


def message_json(decoded: DecodedMessage) -> dict[str, Any]:
    """The JSON object of one message (see ``decode --help``)."""
    msg = decoded.message
    sname, file = _fields(decoded)
    mtype = msg.message_type
    return {
        "source": decoded.source,
        "op": msg.op,
        "htype": msg.htype,
        "hlen": msg.hlen,
        "hops": msg.hops,
        "xid": msg.xid,
        "secs": msg.secs,
        "flags": msg.flags,
        "ciaddr": _dotted(msg.ciaddr),
        "yiaddr": _dotted(msg.yiaddr),
        "siaddr": _dotted(msg.siaddr),
        "giaddr": _dotted(msg.giaddr),
        "chaddr": msg.hardware_address.hex(),
        "sname": sname,
        "file": file,
        "message_type": mtype.name if mtype is not None else None,
        "options": [{"code": v.code, "name": v.name, "value": v.to_json()} for v in decoded.options],
        "auth": decoded.auth.to_json() if decoded.auth is not None else None,
    }


def error_json(source: str, reason: str, offset: int | None) -> dict[str, Any]:
    return {"source": source, "error": reason, "offset": offset}


def json_line(obj: dict[str, Any]) -> str:
    """One JSON Lines record, ASCII, with bytes kept by surrogateescape shown as ``\\xNN``."""
    line = json.dumps(obj)
    # Lone surrogates would be written as \udcNN, which strict parsers refuse: the rare
    # line that has any is rendered again from a cleaned copy.
    return json.dumps(_json_safe(obj)) if "\\ud" in line else line


#: Headers repeat a handful of addresses (mostly 0.0.0.0); formatting one costs microseconds.
_dotted: Callable[[IPv4Address], str] = functools.lru_cache(maxsize=4096)(str)


def _flat(value: Any, nested: bool = False) -> str:
    """A JSON-ready value as one readable line."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return _ascii(value)
    if isinstance(value, list):
        inner = ", ".join(_flat(v, True) for v in value)
        return f"[{inner}]" if nested else inner
    if isinstance(value, dict):
        inner = " ".join(f"{k}={_flat(v, True)}" for k, v in value.items())
        return f"({inner})" if nested and len(value) > 1 else inner
    return str(value)


def _human(view: OptionView) -> str:
    value = view.value
    if isinstance(value, bytes) and value.isascii() and value.decode("ascii").isprintable():
        return f'"{value.decode("ascii")}"'  # JSON keeps the hex; people read the text
    if isinstance(value, IntEnum):
        return f"{view.value.name} ({int(view.value)})"
    if view.code == 90 and isinstance(view.value, Authentication):
        return _flat(_json_safe(view.value.to_json()))
    return _flat(view.to_json())


def _table_field(name: str, value: str, overloaded: bool) -> str:
    if overloaded:
        return f" {name}=<options>"  # listed with the others; JSON has the field's hex
    return f' {name}="{_ascii(value)}"' if value else ""


def format_table(decoded: DecodedMessage) -> str:
    """One readable block per message, ASCII only."""
    msg = decoded.message
    sname, file = _fields(decoded)
    mtype = msg.message_type
    flags = f"{msg.flags:#06x}" + (" (broadcast)" if msg.broadcast else "")
    op = {1: "BOOTREQUEST", 2: "BOOTREPLY"}.get(msg.op, str(msg.op))
    chaddr = ":".join(f"{b:02x}" for b in msg.hardware_address)
    lines = [
        f"{decoded.source}  {decoded.detail}  ({decoded.size} bytes)"
        if decoded.detail
        else f"{decoded.source}  ({decoded.size} bytes)",
        f"  {mtype.name if mtype is not None else 'BOOTP'}  op={op} xid={msg.xid:#010x} secs={msg.secs}"
        f" flags={flags} hops={msg.hops}",
        f"  ciaddr={msg.ciaddr} yiaddr={msg.yiaddr} siaddr={msg.siaddr} giaddr={msg.giaddr}",
        f"  chaddr={chaddr} htype={msg.htype} hlen={msg.hlen}"
        + _table_field("sname", sname, bool(decoded.overload & 2))
        + _table_field("file", file, bool(decoded.overload & 1)),
    ]
    width = max((len(v.name) for v in decoded.options), default=0)
    lines.extend(f"  {v.code:>3} {v.name:<{width}}  {_human(v)}" for v in decoded.options)
    if decoded.auth is not None:
        lines.append(f"  auth: {decoded.auth.summary()}")
    return "\n".join(lines) + "\n"


def format_error(source: str, reason: str, offset: int | None) -> str:
    where = f" (offset {offset})" if offset is not None else ""
    return f"{source}: malformed: {_ascii(reason)}{where}\n"


# --------------------------------------------------------------------------- driver


def run_decode(config: DecodeConfig, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    """Decode every input, print as configured; return the exit status."""
    decoder = Decoder(config)
    unreadable = 0
    live = not config.inputs or "-" in config.inputs
    as_json = config.json
    write = stdout.write

    for item in iter_inputs(config, stdin):
        if isinstance(item, Payload):
            try:
                decoded = decoder.decode(item)
            except DecodeError as exc:
                if as_json:
                    write(json_line(error_json(item.source, exc.reason, exc.offset)) + "\n")
                else:
                    write(format_error(item.source, exc.reason, exc.offset))
            else:
                write(json_line(message_json(decoded)) + "\n" if as_json else format_table(decoded) + "\n")
            if live:
                stdout.flush()
        elif isinstance(item, Failure):
            if item.fatal:
                unreadable += 1
                where = f" (at byte {item.offset})" if item.offset is not None else ""
                stderr.write(f"ce-autoconf decode: {_ascii(item.source)}: {_ascii(item.reason)}{where}\n")
                if as_json:
                    write(json_line(error_json(item.source, item.reason, item.offset)) + "\n")
            else:
                decoder.malformed += 1
                if as_json:
                    write(json_line(error_json(item.source, item.reason, item.offset)) + "\n")
                else:
                    write(format_error(item.source, item.reason, item.offset))
        elif not config.quiet:
            stderr.write(_capture_line(item))

    stdout.flush()
    if not config.quiet:
        stderr.write(
            f"decoded {decoder.messages} messages, {decoder.malformed} malformed; auth: "
            f"{decoder.auth_valid} valid, {decoder.auth_failed} failed, "
            f"{decoder.auth_unchecked} without a MAC\n"
        )
    if unreadable:
        return 1
    if config.strict and (decoder.malformed or decoder.auth_failed):
        return 1
    return 0


def _capture_line(summary: CaptureSummary) -> str:
    stats = summary.stats
    skipped = stats.skipped()
    extra = "; skipped " + ", ".join(f"{n} {reason}" for reason, n in skipped.items()) if skipped else ""
    return f"{_ascii(summary.source)}: {stats.frames} frames, {stats.datagrams} DHCP datagrams{extra}\n"
