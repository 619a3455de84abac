"""The server's TOML configuration, validated at start.

Every problem names the file, the line and the field, e.g.::

    server.toml:14: subnets[0].pools[1]: 10.0.1.300 is not an IPv4 address

and all problems are reported at once, so an operator fixes a file in one pass. Unknown
keys are errors: a misspelt ``lease_tme`` must not silently leave the default in force.

tomllib returns values without positions, so :func:`locate_fields` scans the text for
table headers and ``key =`` lines (arrays of tables by index, inline arrays by element)
and maps each dotted field path to its line. Values from here go into
:mod:`dhcp_server.model`; the model's own ``ValueError`` is reported against the field
that caused it.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Final, TypeVar

try:  # the PostgreSQL store's optional dependency: only its DSN check needs it here
    from psycopg import Error as _PsycopgError
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    conninfo_to_dict = None  # type: ignore[assignment]
    _PsycopgError = Exception  # type: ignore[assignment,misc]

from dhcp_server.model import (
    AuthPolicy,
    ClientKey,
    PoolRange,
    QuarantinePolicy,
    Reservation,
    ServerConfig,
    SubnetConfig,
)

__all__ = [
    "ApiConfig",
    "ConfigError",
    "FieldPath",
    "ListenConfig",
    "Problem",
    "RuntimeConfig",
    "StoreConfig",
    "format_path",
    "load_config",
    "locate_fields",
    "parse_config",
]

T = TypeVar("T")
FieldPath = tuple[str | int, ...]

DEFAULT_PORT: Final = 67
DEFAULT_MAX_QUEUE_DELAY: Final = 2.0  # seconds; see DriverConfig.max_queue_delay
# A DHCP server receives broadcasts, so by default it binds the wildcard address.
ANY_ADDRESS: Final = IPv4Address("0.0.0.0")  # noqa: S104
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_IFNAME: Final = re.compile(r"[^\s/:]{1,15}")
_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SCALAR: Final = re.compile(r"[^,\]}#\r\n]*")
_TOML_POSITION: Final = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


# -- problems ------------------------------------------------------------------------------------


def format_path(path: FieldPath) -> str:
    """``("subnets", 0, "pools", 1)`` -> ``subnets[0].pools[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{name}" if out else name
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file, at a line and a field when they are known."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


def syntax_problem(file: str, text: str, error: tomllib.TOMLDecodeError, *, quiet: bool = False) -> Problem:
    """tomllib's message reshaped as ``file:line: ...``; ``quiet`` drops quoted source text."""
    message = str(error)
    match = _TOML_POSITION.search(message)
    line: int | None = None
    if match is not None:
        message = message[: match.start()]
        if match.group(1) is None:
            line = text.count("\n") + 1
            message += " (at the end of the file)"
        else:
            line = int(match.group(1))
            message += f" (column {match.group(2)})"
    if quiet:  # e.g. "Illegal character '\x01'": a character of a key is still key material
        message = re.sub(r"\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", "", message)
    return Problem(file, line, "", f"TOML syntax error: {message}")


# -- locating fields -----------------------------------------------------------------------------


class _Scanner:
    """A forgiving walk over TOML text that tomllib already accepted, noting where keys are."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[FieldPath, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._arrays: dict[FieldPath, int] = {}  # array of tables -> elements seen so far

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def record(self, path: FieldPath, pos: int) -> None:
        line = self.line(pos)
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def skip(self, newlines: bool) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#" and newlines:
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def run(self) -> None:
        table: FieldPath = ()
        s = self.s
        while True:
            self.skip(newlines=True)
            if self.i >= len(s):
                return
            start = self.i
            if s.startswith("[[", self.i):
                self.i += 2
                table = self.header(self.key(), start, array=True)
                self.expect("]]")
            elif s[self.i] == "[":
                self.i += 1
                table = self.header(self.key(), start, array=False)
                self.expect("]")
            else:
                path = table + tuple(self.key())
                self.expect("=")
                self.record(path, start)
                self.value(path)

    def header(self, keys: list[str], pos: int, array: bool) -> FieldPath:
        path: FieldPath = ()
        for n, key in enumerate(keys):
            path += (key,)
            if path in self._arrays and not (array and n == len(keys) - 1):
                path += (self._arrays[path] - 1,)  # the latest element of an enclosing array
        if array:
            count = self._arrays.get(path, 0)
            self._arrays[path] = count + 1
            self.record(path, pos)
            path += (count,)
        self.record(path, pos)
        return path

    def expect(self, token: str) -> None:
        self.skip(newlines=False)
        if not self.s.startswith(token, self.i):
            raise ValueError(f"expected {token!r} at {self.i}")
        self.i += len(token)
        self.skip(newlines=False)

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip(newlines=False)
            c = self.peek()
            if c in "\"'":
                start = self.i
                self.string()
                parts.append(tomllib.loads("k = " + self.s[start : self.i])["k"])
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if m is None:
                    raise ValueError(f"no key at {self.i}")
                parts.append(m.group())
                self.i = m.end()
            self.skip(newlines=False)
            if self.peek() != ".":
                return parts
            self.i += 1

    def string(self) -> None:
        s, i = self.s, self.i
        quote = s[i]
        if s.startswith(quote * 3, i):
            i += 3
            while not s.startswith(quote * 3, i):
                i += 2 if quote == '"' and s[i] == "\\" else 1
                if i >= len(s):
                    raise ValueError("unterminated string")
            i += 3
            for _ in range(2):  # a closing run of up to five quotes ends with two of content
                if s.startswith(quote, i):
                    i += 1
        else:
            i += 1
            while s[i] != quote:
                i += 2 if quote == '"' and s[i] == "\\" else 1
            i += 1
        self.i = i

    def value(self, path: FieldPath) -> None:
        s = self.s
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            n = 0
            while True:
                self.skip(newlines=True)
                if s[self.i] == "]":
                    self.i += 1
                    return
                self.record((*path, n), self.i)
                self.value((*path, n))
                n += 1
                self.skip(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip(newlines=True)
                if s[self.i] == "}":
                    self.i += 1
                    return
                start = self.i
                sub = path + tuple(self.key())
                self.expect("=")
                self.record(sub, start)
                self.value(sub)
                self.skip(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        else:  # number, boolean, date: up to a delimiter
            m = _SCALAR.match(s, self.i)
            assert m is not None
            self.i = m.end()


def locate_fields(text: str) -> dict[FieldPath, int]:
    """Map each field path in ``text`` (valid TOML) to the 1-based line where it is set.

    Good enough for configuration files as people write them; if the scan gets lost it
    keeps what it found, and callers fall back to the nearest enclosing field.
    """
    scanner = _Scanner(text)
    with contextlib.suppress(ValueError, IndexError, tomllib.TOMLDecodeError):
        scanner.run()
    return scanner.lines


# -- reading values ------------------------------------------------------------------------------


class FieldError(Exception):
    """A value is wrong; ``at`` locates it below the field being read (an array index...)."""

    def __init__(self, message: str, at: FieldPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def kind(value: object) -> str:
    """A TOML value's type, as the operator wrote it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


class Reader:
    """Collects problems for one file, each placed at its field's line."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = locate_fields(text)
        self.problems: list[Problem] = []

    def line_of(self, path: FieldPath) -> int | None:
        for n in range(len(path), 0, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                return line
        return None

    def problem(self, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.line_of(path), format_path(path), message))

    def root(self, data: Mapping[str, object]) -> Table:
        return Table(self, data, ())

    def check(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


class Table:
    """One TOML table being read; keys never read are reported as unknown by :meth:`done`."""

    def __init__(self, reader: Reader, data: Mapping[str, object], path: FieldPath) -> None:
        self.reader = reader
        self.data = data
        self.path = path
        self._read: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def known(self, *keys: str) -> None:
        """Accept ``keys`` without reading them (another problem already covers them)."""
        self._read.update(keys)

    def fail(self, key: str | None, message: str) -> None:
        self.reader.problem(self.path if key is None else (*self.path, key), message)

    def get(self, key: str, convert: Callable[[object], T], default: T) -> T:
        self._read.add(key)
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except FieldError as e:
            self.reader.problem((*self.path, key, *e.at), e.message)
            return default

    def require(self, key: str, convert: Callable[[object], T]) -> T | None:
        if key not in self.data:
            self._read.add(key)
            self.fail(key, "is required")
            return None
        return self.get(key, convert, None)

    def table(self, key: str) -> Table:
        self._read.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, not {kind(value)}")
            value = {}
        return Table(self.reader, value, (*self.path, key))

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        self._read.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"must be an array of tables ([[{key}]]), not {kind(value)}")
            return []
        return [Table(self.reader, v, (*self.path, key, i)) for i, v in enumerate(value)]

    def done(self) -> None:
        for key in self.data:
            if key not in self._read:
                close = difflib.get_close_matches(key, self._read, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.fail(key, f"unknown key{hint}")


# -- converters: object -> value, or FieldError ---------------------------------------------------------


def string(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {kind(value)}")
    return value


def text(value: object) -> str:
    """A string that says something."""
    if not string(value):
        raise FieldError("must not be empty")
    assert isinstance(value, str)
    return value


def ipv4(value: object) -> IPv4Address:
    if not isinstance(value, str):
        raise FieldError(f'expected an IPv4 address as a string such as "192.0.2.1", got {kind(value)}')
    try:
        return IPv4Address(value)
    except ValueError:
        raise FieldError(f"{value} is not an IPv4 address") from None


def unicast(value: object) -> IPv4Address:
    address = ipv4(value)
    if address.is_unspecified or address.is_multicast or address == IPv4Address("255.255.255.255"):
        raise FieldError(f"{address} is not a unicast address")
    return address


def network(value: object) -> IPv4Network:
    if not isinstance(value, str):
        raise FieldError(f'expected a network as a string such as "192.0.2.0/24", got {kind(value)}')
    try:
        return IPv4Network(value)
    except ValueError:
        pass
    try:
        loose = IPv4Network(value, strict=False)
    except ValueError:
        raise FieldError(f"{value} is not an IPv4 network such as 192.0.2.0/24") from None
    raise FieldError(f"{value} has host bits set (the network is {loose})")


def pool(value: object) -> PoolRange:
    if not isinstance(value, str) or value.count("-") != 1:
        shown = kind(value) if not isinstance(value, str) else value
        raise FieldError(f'expected "first-last" such as "192.0.2.100-192.0.2.199", got {shown}')
    first, last = (ipv4(part.strip()) for part in value.split("-"))
    try:
        return PoolRange(first, last)
    except ValueError as e:
        raise FieldError(str(e)) from None


def integer(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"expected an integer, got {kind(value)}")
        if not low <= value <= high:
            raise FieldError(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def seconds(*, positive: bool) -> Callable[[object], float]:
    """A duration in seconds, integer or float."""

    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"expected a number of seconds, got {kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise FieldError("must be a finite number of seconds")
        if number < 0 or (positive and number == 0):
            raise FieldError(f"must be {'greater than' if positive else 'at least'} 0, got {value}")
        return number

    return convert


def array(item: Callable[[object], T]) -> Callable[[object], tuple[T, ...]]:
    def convert(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise FieldError(f"expected an array, got {kind(value)}")
        out: list[T] = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except FieldError as e:
                raise FieldError(e.message, (i, *e.at)) from None
        return tuple(out)

    return convert


def auth_policy(value: object) -> AuthPolicy:
    choices = ", ".join(p.value for p in AuthPolicy)
    if not isinstance(value, str):
        raise FieldError(f"expected one of {choices}, got {kind(value)}")
    try:
        return AuthPolicy(value)
    except ValueError:
        raise FieldError(f"{value!r} is not one of {choices}") from None


def octets(value: object, *, what: str, separators: str, max_length: int) -> bytes:
    if not isinstance(value, str):
        raise FieldError(f"expected {what} as a string, got {kind(value)}")
    compact = value
    for sep in separators:
        compact = compact.replace(sep, "")
    try:
        data = bytes.fromhex(compact)
    except ValueError:
        raise FieldError(f"{value} is not {what}") from None
    if not 1 <= len(data) <= max_length:
        raise FieldError(f"{value} is not {what} (1 to {max_length} octets)")
    return data


def hardware(value: object) -> bytes:
    return octets(
        value, what='a hardware address such as "02:00:00:77:00:32"', separators=":-", max_length=16
    )


def client_id(value: object) -> bytes:
    return octets(value, what="a client identifier in hexadecimal", separators=":", max_length=255)


def interface(value: object) -> str:
    name = text(value)
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise FieldError(f"{name!r} is not an interface name")
    return name


def domain(value: object) -> str:
    name = text(value).rstrip(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise FieldError(f"{value!r} is not a domain name")
    return name


def endpoint(value: object) -> tuple[str, int]:
    """``"127.0.0.1:8067"`` or ``"[::1]:8067"``."""
    shown = value if isinstance(value, str) else kind(value)
    if not isinstance(value, str) or ":" not in value:
        raise FieldError(f'expected "address:port" such as "127.0.0.1:8067", got {shown}')
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip_address(host)
        number = int(port)
    except ValueError:
        raise FieldError(f'expected "address:port" such as "127.0.0.1:8067", got {shown}') from None
    if not 1 <= number <= 65535:
        raise FieldError(f"port {number} is out of range")
    return host, number


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {kind(value)}")
    return value


def path_under(base: Path) -> Callable[[object], Path]:
    """A file path; a relative one is taken from the configuration file's directory."""

    def convert(value: object) -> Path:
        return base / text(value)

    return convert


# -- the configuration ---------------------------------------------------------------------------


class NotPrivateError(Exception):
    """A secret-bearing file others could read or replace; the message says how to fix it."""


def read_private(path: Path) -> bytes:
    """The contents of a file only its owner (us) can read; checked on the open descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPrivateError("is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise NotPrivateError(
                f"has mode {mode:04o}; secret files must be 0600 or stricter (chmod 600 {path})"
            )
        if st.st_uid != os.geteuid():
            raise NotPrivateError(
                f"is owned by uid {st.st_uid}, not by the server's user (uid {os.geteuid()})"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_password(path: Path) -> str:
    """A database password: the first line of a private file. Messages never quote it."""
    try:
        raw = read_private(path)
    except NotPrivateError as e:
        raise FieldError(f"{path} {e}") from None
    except OSError as e:
        raise FieldError(f"cannot read {path}: {e.strerror}") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise FieldError(f"{path} is not UTF-8 text") from None
    password = lines[0].strip() if lines else ""
    if not password:
        raise FieldError(f"{path} is empty; the password is its first line")
    return password


def private_password_file(base: Path) -> Callable[[object], Path]:
    """A password file, read once at start to check it (mode 0600, ours, not empty); the
    configuration keeps the path only, so no repr of it can show the password."""

    def convert(value: object) -> Path:
        path = base / text(value)
        read_password(path)
        return path

    return convert


def libpq_dsn(value: object) -> str:
    """A libpq connection string (``host=... dbname=...`` or ``postgresql://...``) without a
    password: that belongs in ``password_file``. libpq's own message is not quoted: it can
    echo the text around an error, which may be a password typed in the wrong place."""
    dsn = string(value)
    if conninfo_to_dict is None:
        raise FieldError("the PostgreSQL store needs psycopg: pip install 'ce-autoconf[postgresql]'")
    try:
        params = conninfo_to_dict(dsn)
    except _PsycopgError:
        raise FieldError(
            "is not a libpq connection string (key=value pairs such as "
            '"host=/run/postgresql dbname=dhcp user=dhcp", or a postgresql:// URI)'
        ) from None
    if "password" in params:
        raise FieldError("must not contain the password: put it in store.password_file (mode 0600)")
    return dsn


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the durable state lives: a SQLite file (``path``) or a PostgreSQL database
    (``dsn``, and ``password_file`` when the role logs in with a password)."""

    backend: str  # "sqlite" or "postgresql"
    path: Path | None = None
    dsn: str | None = None
    password_file: Path | None = None

    def describe(self) -> str:
        """For logs: the file, or the DSN (which never holds a password)."""
        return str(self.path) if self.backend == "sqlite" else f"postgresql: {self.dsn}"


@dataclass(frozen=True, slots=True)
class ListenConfig:
    interfaces: tuple[str, ...]
    address: IPv4Address
    port: int
    max_queue_delay: float


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str
    port: int
    token_file: Path
    #: ``GET /metrics`` asks for the bearer token too (off: metrics hold no secrets, and a
    #: scraper given the management token could change the directory).
    metrics_require_token: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """What the driver needs: the engine's :class:`ServerConfig` and where to find the rest."""

    server: ServerConfig
    store: StoreConfig
    listen: ListenConfig
    api: ApiConfig | None
    secrets_file: Path | None
    source: Path


_STORE_BACKENDS: Final = ("sqlite", "postgresql")


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and validate a configuration file; raises :class:`ConfigError` naming every problem."""
    file = Path(path)
    try:
        text_ = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {e}")]) from None
    return parse_config(text_, str(path), base=file.parent)


def parse_config(text_: str, file: str = "<config>", base: Path = Path()) -> RuntimeConfig:
    """Validate configuration text; ``file`` names it in errors, ``base`` anchors relative paths."""
    try:
        data = tomllib.loads(text_)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([syntax_problem(file, text_, e)]) from None
    reader = Reader(file, text_)
    root = reader.root(data)
    server = _server_config(root)
    store = _store(root.table("store"), base)
    listen = _listen(root.table("listen"), server)
    api = _api(root.table("api"), base) if "api" in root else None
    secrets = root.table("secrets")
    secrets_file = secrets.get("file", path_under(base), None)
    secrets.done()
    root.done()
    reader.check()
    assert server is not None
    assert store is not None
    assert listen is not None
    return RuntimeConfig(server, store, listen, api, secrets_file, Path(file))


def _server_config(root: Table) -> ServerConfig | None:
    reader = root.reader
    before = len(reader.problems)
    server = root.table("server")
    server_id = server.require("server_id", unicast)
    realm = server.get("auth_realm", string, "")
    offer_hold = server.get("offer_hold", seconds(positive=True), 60.0)
    decline_hold = server.get("decline_hold", seconds(positive=False), 3600.0)
    server.done()

    q = root.table("quarantine")
    defaults = QuarantinePolicy()
    quarantine = QuarantinePolicy(
        max_messages=q.get("max_messages", integer(1, 1 << 31), defaults.max_messages),
        window=q.get("window", seconds(positive=True), defaults.window),
        duration=q.get("duration", seconds(positive=False), defaults.duration),
        max_tracked=q.get("max_tracked", integer(1, 1 << 31), defaults.max_tracked),
    )
    q.done()

    fr = root.table("forcerenew")
    first_retry = fr.get("first_retry", seconds(positive=True), 4.0)
    max_attempts = fr.get("max_attempts", integer(1, 100), 5)
    holddown = fr.get("holddown", seconds(positive=False), 1.0)
    fr.done()

    vo = root.table("vpn_options")
    # draft-lee's Peer-CE and VPN-server options have no IANA codes: site-specific range.
    peer_ce = vo.get("peer_ce", integer(224, 254), 224)
    vpn_server = vo.get("vpn_server", integer(224, 254), 225)
    if peer_ce == vpn_server and "vpn_server" in vo:
        vo.fail("vpn_server", f"option code {vpn_server} is already peer_ce's")
    vo.done()

    subnet_tables = root.tables("subnets")
    if not subnet_tables and root.data.get("subnets", []) == []:
        root.fail("subnets", "at least one [[subnets]] is required")
    subnets = [_subnet(t) for t in subnet_tables]
    if len(reader.problems) > before or server_id is None:
        return None
    built = [s for s in subnets if s is not None]
    for j, b in enumerate(built):
        for i in range(j):
            if built[i].network.overlaps(b.network):
                subnet_tables[j].fail("network", f"{b.network} overlaps subnets[{i}] ({built[i].network})")
    if len(reader.problems) > before:
        return None
    try:
        return ServerConfig(
            server_id=server_id,
            subnets=tuple(built),
            offer_hold=offer_hold,
            decline_hold=decline_hold,
            quarantine=quarantine,
            forcerenew_first_retry=first_retry,
            forcerenew_max_attempts=max_attempts,
            forcerenew_holddown=holddown,
            peer_ce_code=peer_ce,
            vpn_server_code=vpn_server,
            auth_realm=realm.encode(),
        )
    except ValueError as e:  # a rule the model gained after this file was written
        root.fail("subnets", str(e))
        return None


def _reservation(t: Table) -> Reservation | None:
    hw = t.get("hw", hardware, None)
    htype = t.get("htype", integer(1, 255), 1)
    cid = t.get("client_id", client_id, None)
    address = t.require("address", ipv4)
    t.done()
    if ("hw" in t) == ("client_id" in t):
        t.fail(None, "needs exactly one of hw or client_id")
        return None
    if "htype" in t and "hw" not in t:
        t.fail("htype", "only applies with hw")
    if hw is not None and htype == 1 and len(hw) != 6:
        t.fail("hw", f"an Ethernet address (htype 1) is 6 octets, not {len(hw)}")
        return None
    if address is None:
        return None
    if hw is not None:
        return Reservation(ClientKey.from_hardware(htype, hw), address)
    if cid is not None:
        return Reservation(ClientKey.from_client_id(cid), address)
    return None


def _subnet(t: Table) -> SubnetConfig | None:
    reader = t.reader
    before = len(reader.problems)
    net = t.require("network", network)
    pools: tuple[PoolRange, ...] = t.get("pools", array(pool), ())
    routers: tuple[IPv4Address, ...] = t.get("routers", array(ipv4), ())
    dns: tuple[IPv4Address, ...] = t.get("dns_servers", array(ipv4), ())
    domain_name = t.get("domain_name", domain, None)
    lease_time = t.get("lease_time", integer(1, 0xFFFFFFFF), 3600)
    renewal = t.get("renewal_time", integer(1, 0xFFFFFFFF), None)
    rebinding = t.get("rebinding_time", integer(1, 0xFFFFFFFF), None)
    auth = t.get("auth", auth_policy, AuthPolicy.REQUIRED)
    iface = t.get("interface", interface, None)
    reservation_tables = t.tables("reservations")
    reservations = [_reservation(r) for r in reservation_tables]
    t.done()
    if net is None or len(reader.problems) > before:
        return None
    _check_addresses(
        t, net, pools=pools, routers=routers, tables=reservation_tables, reservations=reservations
    )
    if len(reader.problems) > before:
        return None
    try:
        return SubnetConfig(
            network=net,
            pools=pools,
            routers=routers,
            dns_servers=dns,
            domain_name=domain_name,
            lease_time=lease_time,
            renewal_time=renewal,
            rebinding_time=rebinding,
            reservations=tuple(r for r in reservations if r is not None),
            auth=auth,
            interface=iface,
        )
    except ValueError as e:
        t.fail(_blame_times(lease_time, renewal, rebinding), str(e))
        return None


def _check_addresses(
    t: Table,
    net: IPv4Network,
    *,
    pools: tuple[PoolRange, ...],
    routers: tuple[IPv4Address, ...],
    tables: list[Table],
    reservations: list[Reservation | None],
) -> None:
    """What the model checks (pools and reservations inside the network) and what it leaves
    to us (overlaps, the network and broadcast addresses, routers off the link), per field."""
    edges = {net.network_address, net.broadcast_address} if net.prefixlen <= 30 else set()
    for i, p in enumerate(pools):
        where = ("pools", i)
        if p.first not in net or p.last not in net:
            t.reader.problem((*t.path, *where), f"pool {p.first}-{p.last} is outside {net}")
        elif any(e in p for e in edges):
            t.reader.problem(
                (*t.path, *where), f"pool {p.first}-{p.last} holds {net}'s network or broadcast address"
            )
        for j in range(i):
            if p.first <= pools[j].last and pools[j].first <= p.last:
                t.reader.problem((*t.path, *where), f"overlaps pools[{j}] ({pools[j].first}-{pools[j].last})")
    for i, router in enumerate(routers):
        if router not in net:
            t.reader.problem((*t.path, "routers", i), f"{router} is not in {net}")
    seen_address: dict[IPv4Address, int] = {}
    seen_client: dict[ClientKey, int] = {}
    for i, (rt, r) in enumerate(zip(tables, reservations, strict=True)):
        if r is None:
            continue
        if r.address not in net:
            rt.fail("address", f"reservation {r.address} is outside {net}")
        elif r.address in edges:
            rt.fail("address", f"{r.address} is {net}'s network or broadcast address")
        if r.address in seen_address:
            rt.fail("address", f"{r.address} is already reserved by reservations[{seen_address[r.address]}]")
        if r.client in seen_client:
            rt.fail("hw" if "hw" in rt else "client_id", f"already has reservations[{seen_client[r.client]}]")
        seen_address.setdefault(r.address, i)
        seen_client.setdefault(r.client, i)


def _blame_times(lease: int, renewal: int | None, rebinding: int | None) -> str:
    """Which of the three times to point at when T1 < T2 < lease time does not hold."""
    if renewal is not None and not renewal < lease:
        return "renewal_time"
    if rebinding is not None and not rebinding < lease:
        return "rebinding_time"
    if rebinding is not None:
        return "rebinding_time"
    if renewal is not None:
        return "renewal_time"
    return "lease_time"


def _store(t: Table, base: Path) -> StoreConfig | None:
    backend = t.get("backend", text, "sqlite")
    if backend not in _STORE_BACKENDS:
        t.fail("backend", f"{backend!r} is not one of {', '.join(_STORE_BACKENDS)}")
        t.known("path", "dsn", "password_file")
        t.done()
        return None
    if backend == "sqlite":
        path = t.require("path", path_under(base))
        for key in ("dsn", "password_file"):
            if key in t:
                t.known(key)
                t.fail(key, 'is for backend = "postgresql"')
        t.done()
        return None if path is None else StoreConfig(backend, path)
    if "path" in t:
        t.known("path")
        t.fail("path", 'is for backend = "sqlite"; PostgreSQL is reached through dsn')
    dsn = t.require("dsn", libpq_dsn)
    password_file = t.get("password_file", private_password_file(base), None)
    t.done()
    return None if dsn is None else StoreConfig(backend, dsn=dsn, password_file=password_file)


def _listen(t: Table, server: ServerConfig | None) -> ListenConfig | None:
    interfaces: tuple[str, ...] = t.get("interfaces", array(interface), ())
    address = t.get("address", ipv4, ANY_ADDRESS)
    port = t.get("port", integer(1, 65535), DEFAULT_PORT)
    max_queue_delay = t.get("max_queue_delay", seconds(positive=True), DEFAULT_MAX_QUEUE_DELAY)
    t.done()
    attached = () if server is None else tuple(s.interface for s in server.subnets if s.interface)
    if not interfaces:
        interfaces = tuple(dict.fromkeys(attached))
        if server is not None and not interfaces:
            t.fail("interfaces", "no interface to listen on: set it, or a subnet's interface")
    elif server is not None:
        for i, subnet in enumerate(server.subnets):
            if subnet.interface is not None and subnet.interface not in interfaces:
                t.reader.problem(
                    ("subnets", i, "interface"), f"{subnet.interface} is not in listen.interfaces"
                )
    return ListenConfig(interfaces, address, port, max_queue_delay)


def _api(t: Table, base: Path) -> ApiConfig | None:
    listen = t.require("listen", endpoint)
    token_file = t.require("token_file", path_under(base))
    metrics_require_token = t.get("metrics_require_token", boolean, False)
    t.done()
    if listen is None or token_file is None:
        return None
    return ApiConfig(listen[0], listen[1], token_file, metrics_require_token)
