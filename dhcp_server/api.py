"""The management API: HTTP/1.1 JSON over asyncio streams, with h11 doing the HTTP.

Routes (the OpenAPI 3.1 document, ``dhcp_server/openapi.json``, is served at
``GET /openapi.json`` and a test keeps it and :data:`ROUTES` the same):

==========  ===================================  =============================================
GET         /v1/status                           counters, lease states, sizes
GET/POST    /v1/vpns                             list VPNs; create one (409 if the ID exists)
GET/PUT/DEL /v1/vpns/{vpn_id}                    one VPN; create or replace; delete (no members)
GET         /v1/ces                              list CEs (never their keys)
GET/PUT/DEL /v1/ces/{name}                       one CE; create or replace by name; delete
POST        /v1/ces/{name}/forcerenew            send the CE a FORCERENEW now (202)
GET         /v1/leases                           leases (``?state=bound`` to filter)
GET         /v1/forcerenews                      FORCERENEWs waiting for their CE
GET         /v1/quarantine                       quarantined clients
DELETE      /v1/quarantine/{client}              end one client's quarantine
GET         /metrics                             Prometheus text format (token optional)
GET         /openapi.json                        this API's description (no token)
==========  ===================================  =============================================

Every ``/v1`` route wants ``Authorization: Bearer <token>``; the token comes from a file
that only the server's user may read, and is compared in constant time. Errors are
``{"error": "...", "field": "..."}``: 400 for a request that does not validate (naming the
field, never quoting a value: a misplaced key must not come back in an error), 401, 404,
405, 409 when the request contradicts the directory, 413, 415, 503 when the store could
not commit.

A change is a closure over the engine's management methods handed to
:meth:`Manager.manage`, which runs it in the event loop's thread and returns once its
writes are durable (the driver's group commit), so a 200/201 means "on disk". Reads look
at the engine directly, also in the loop's thread: there is no lock because there is no
other thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata, resources
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from dhcp_server.actions import Outcome, Received, Reply
from dhcp_server.directory import DirectoryError
from dhcp_server.engine import ServerEngine
from dhcp_server.logs import log_event
from dhcp_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from dhcp_server.metrics import TimedStore, lease_states, render_metrics
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey, Lease, LeaseState, VpnRecord
from dhcp_server.secrets import MAX_KEY_LENGTH, MIN_KEY_LENGTH
from dhcp_server.store import Store

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ROUTES",
    "ApiError",
    "ApiServer",
    "LocalManager",
    "Manager",
    "TokenFileError",
    "load_token",
    "openapi_document",
    "start_api",
]

log = logging.getLogger("dhcp_server.api")
events_log = logging.getLogger("dhcp_server.events")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8067
_MIN_TOKEN: Final = 16
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_SEPARATORS: Final = re.compile(r"[\s:.-]")
_MAX_VPNS: Final = 1024
_MAX_SERVERS: Final = 64
_U32: Final = 0xFFFFFFFF


# == the engine's side =========================================================================


class Manager(Protocol):
    """What the API needs from whatever runs the engine: :class:`~dhcp_server.driver.ServerDriver`
    in the server, :class:`LocalManager` in tests."""

    @property
    def engine(self) -> ServerEngine: ...

    async def manage(self, operation: Callable[[float], Outcome]) -> Outcome:
        """Run ``operation(now)`` in the loop's thread; return once its writes are durable."""
        ...


class LocalManager:
    """A :class:`Manager` without sockets: writes go straight to ``store``, replies to a list.

    For tests and embedding. ``clock`` is the engine's time; after every input the timer
    work that is due (FORCERENEWs) runs, as the driver's timer would, so a FORCERENEW asked
    for through the API is in :attr:`sent` when the call returns.
    """

    def __init__(self, engine: ServerEngine, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self.store = store
        self.clock = clock
        self.sent: list[Reply] = []
        self.counters: Counter[str] = Counter()

    @property
    def engine(self) -> ServerEngine:
        return self._engine

    def _absorb(self, outcome: Outcome) -> None:
        for event in outcome.events:
            log_event(events_log, event)
        if outcome.writes:
            self.store.commit(outcome.writes)
            self.counters["commits"] += 1
        self.sent.extend(outcome.replies)

    def run_timers(self) -> Outcome:
        """Run the engine's timer work if any is due now."""
        now = self.clock()
        due = self._engine.next_timer()
        outcome = self._engine.on_timer(now) if due is not None and due <= now else Outcome()
        self._absorb(outcome)
        return outcome

    def receive(self, received: Received) -> Outcome:
        """Feed one datagram to the engine, as the driver would."""
        self.counters["datagrams"] += 1
        outcome = self._engine.handle(received, self.clock())
        self._absorb(outcome)
        self.run_timers()
        return outcome

    async def manage(self, operation: Callable[[float], Outcome]) -> Outcome:
        outcome = operation(self.clock())
        self._absorb(outcome)
        self.run_timers()
        return outcome


# == the token =================================================================================


class TokenFileError(ValueError):
    """The API token file cannot be used (missing, empty, too short, or readable by others)."""


def load_token(path: str | Path) -> bytes:
    """Read the bearer token: the file's first line, stripped; the file must be mode 0600 or stricter."""
    file = Path(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TokenFileError(f"{file}: cannot open the API token file: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TokenFileError(f"{file}: the API token file is not a regular file")
        if mode & 0o077:
            raise TokenFileError(
                f"{file}: the API token file is mode {stat.S_IMODE(mode):04o}; "
                "it must be readable by its owner only (chmod 600)"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(4096)
    finally:
        os.close(fd)
    lines = data.splitlines()
    token = lines[0].strip() if lines else b""
    if len(token) < _MIN_TOKEN:
        raise TokenFileError(f"{file}: the API token must be at least {_MIN_TOKEN} characters")
    if any(c < 0x21 or c > 0x7E for c in token):
        raise TokenFileError(f"{file}: the API token must be printable ASCII without spaces")
    return token


# == errors and validation =====================================================================


class ApiError(Exception):
    """An answer other than success: a status, a message and, for validation, the field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, message, field)


class _Body:
    """A JSON object from a request, read field by field; unknown fields are errors."""

    def __init__(self, data: object) -> None:
        if not isinstance(data, dict):
            raise _bad("", "the request body must be a JSON object")
        self.data: dict[str, object] = data
        self.read: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def get(self, name: str) -> object:
        self.read.add(name)
        return self.data.get(name)

    def done(self) -> None:
        for name in self.data:
            if name not in self.read:
                raise _bad(name[:64], "unknown field")


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, f"must be an integer from {low} to {high}")
    if not low <= value <= high:
        raise _bad(field, f"must be from {low} to {high}")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return value


def _ipv4(value: object, field: str) -> IPv4Address:
    try:
        return IPv4Address(_string(value, field))
    except ValueError:
        raise _bad(field, "must be an IPv4 address in dotted-quad form") from None


def _hex(value: object, field: str, *, low: int, high: int, what: str) -> bytes:
    # The value is never quoted back: this is also how keys are read.
    if not isinstance(value, str):
        raise _bad(field, f"must be {what} as a hexadecimal string")
    try:
        raw = bytes.fromhex(_HEX_SEPARATORS.sub("", value))
    except ValueError:
        raise _bad(field, f"must be {what} as a hexadecimal string") from None
    if not low <= len(raw) <= high:
        raise _bad(field, f"must be {low} to {high} bytes")
    return raw


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _bad(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _parse_vpn(body: _Body, vpn_id: int | None) -> VpnRecord:
    raw_id = body.get("id")
    if raw_id is not None:
        number = _integer(raw_id, "id", 0, _U32)
        if vpn_id is not None and number != vpn_id:
            raise _bad("id", "differs from the VPN ID in the path")
        vpn_id = number
    if vpn_id is None:
        raise _bad("id", "required")
    name = _string(body.get("name"), "name") if "name" in body else ""
    if not 1 <= len(name) <= 128 or not name.isprintable():
        raise _bad("name", "required: 1-128 printable characters")
    servers_value = body.get("vpn_servers")
    servers: list[IPv4Address] = []
    if servers_value is not None:
        if not isinstance(servers_value, list) or len(servers_value) > _MAX_SERVERS:
            raise _bad("vpn_servers", f"must be a list of at most {_MAX_SERVERS} IPv4 addresses")
        servers = [_ipv4(v, f"vpn_servers[{i}]") for i, v in enumerate(servers_value)]
    auth = AuthPolicy.REQUIRED
    auth_value = body.get("auth")
    if auth_value is not None:
        try:
            auth = AuthPolicy(auth_value)
        except ValueError:
            raise _bad("auth", "must be one of required, optional, off") from None
    body.done()
    return VpnRecord(vpn_id, name, tuple(servers), auth)


@dataclass(frozen=True, slots=True)
class _CeRequest:
    ce: CeRecord
    key: bytes | None = field(repr=False)
    client_field: str | None


def _parse_ce(body: _Body, name: str) -> _CeRequest:
    if "name" in body and body.get("name") != name:
        raise _bad("name", "differs from the CE name in the path")
    body.get("name")
    client: ClientKey | None = None
    client_field: str | None = None
    if "hw" in body and "client_id" in body:
        raise _bad("client_id", "give hw or client_id, not both")
    if "hw" in body:
        mac = _hex(body.get("hw"), "hw", low=1, high=16, what="a hardware address")
        htype = _integer(body.get("htype"), "htype", 1, 255) if "htype" in body else 1
        client, client_field = ClientKey.from_hardware(htype, mac), "hw"
    else:
        if "htype" in body:
            raise _bad("htype", "only applies with hw")
        if "client_id" in body:
            cid = _hex(body.get("client_id"), "client_id", low=2, high=255, what="a client identifier")
            client, client_field = ClientKey.from_client_id(cid), "client_id"
    secret_id = _integer(body.get("secret_id"), "secret_id", 1, _U32) if "secret_id" in body else None
    key = None
    if "key" in body:
        key = _hex(body.get("key"), "key", low=MIN_KEY_LENGTH, high=MAX_KEY_LENGTH, what="the RFC 3118 key")
        if secret_id is None:
            raise _bad("key", "a key needs a secret_id")
    vpns_value = body.get("vpns")
    vpns: set[int] = set()
    if vpns_value is not None:
        if not isinstance(vpns_value, list) or len(vpns_value) > _MAX_VPNS:
            raise _bad("vpns", f"must be a list of at most {_MAX_VPNS} VPN IDs")
        vpns = {_integer(v, f"vpns[{i}]", 0, _U32) for i, v in enumerate(vpns_value)}
    static = _ipv4(body.get("static_address"), "static_address") if "static_address" in body else None
    body.done()
    if client is None and static is None:
        raise _bad("hw", "a CE needs hw or client_id (DHCP) or a static_address")
    return _CeRequest(CeRecord(name, client, secret_id, frozenset(vpns), static), key, client_field)


def parse_client(text: str) -> ClientKey:
    """The inverse of ``str(ClientKey)``: ``hw:01:02:00:00:77:00:32`` or ``id:01:02:...``."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("hw", "id"):
        raise _bad("client", "must look like hw:<htype:mac> or id:<hex>, as listed")
    raw = _hex(rest, "client", low=1, high=256, what="the client")
    return ClientKey(kind.encode() + b":" + raw)


# == rendering =================================================================================


def _time(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _client_fields(client: ClientKey | None) -> dict[str, object]:
    if client is None:
        return {}
    kind, _, raw = client.value.partition(b":")
    if kind == b"hw" and raw:
        return {"hw": raw[1:].hex(":"), "htype": raw[0]}
    return {"client_id": raw.hex(":")}


def _vpn_json(engine: ServerEngine, vpn: VpnRecord) -> dict[str, object]:
    return {
        "id": vpn.vpn_id,
        "name": vpn.name,
        "vpn_servers": [str(a) for a in vpn.vpn_servers],
        "auth": vpn.auth.value,
        "members": sorted(ce.name for ce in engine.directory.members(vpn.vpn_id)),
    }


def _ce_json(engine: ServerEngine, ce: CeRecord, now: float) -> dict[str, object]:
    lease = engine.leases.active_lease_of(ce.client, now) if ce.client is not None else None
    out: dict[str, object] = {"name": ce.name, **_client_fields(ce.client)}
    out["client"] = str(ce.client) if ce.client is not None else None
    out["secret_id"] = ce.secret_id
    out["has_key"] = ce.secret_id is not None and engine.directory.key(ce.secret_id) is not None
    out["vpns"] = sorted(ce.vpns)
    out["static_address"] = str(ce.static_address) if ce.static_address is not None else None
    out["address"] = str(lease.address) if lease is not None else None
    return out


def _lease_state(lease: Lease, now: float) -> str:
    if lease.state is LeaseState.BOUND and not lease.active(now):
        return LeaseState.EXPIRED.value
    return lease.state.value


def _lease_json(engine: ServerEngine, lease: Lease, now: float) -> dict[str, object]:
    ce = engine.directory.ce_by_client(lease.client)
    return {
        "address": str(lease.address),
        "client": str(lease.client),
        "ce": ce.name if ce is not None else None,
        "state": _lease_state(lease, now),
        "expires": _time(lease.expires),
        "hostname": lease.hostname,
    }


def _ce_name(engine: ServerEngine, client: ClientKey) -> str | None:
    ce = engine.directory.ce_by_client(client)
    return ce.name if ce is not None else None


# == HTTP plumbing =============================================================================


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> _Body:
        if not self.body:
            raise _bad("", "a JSON body is required")
        content_type = self.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "the request body must be application/json")
        try:
            data = json.loads(self.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise _bad("", "the request body is not valid JSON") from None
        return _Body(data)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


@dataclass(slots=True)
class Response:
    status: int
    body: object = None
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, str):
            return self.body.encode()
        return (json.dumps(self.body, separators=(",", ":")) + "\n").encode()


Handler = Callable[["ApiServer", Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    handler: Handler
    auth: bool = True

    def match(self, segments: list[str]) -> dict[str, str] | None:
        parts = self.template.strip("/").split("/")
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


_ROUTES: list[Route] = []


def _route(method: str, template: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ROUTES.append(Route(method, template, handler, auth))
        return handler

    return register


class _ClosedError(Exception):
    pass


class _TooLargeError(Exception):
    pass


_REASONS: Final = {
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


def _version() -> str:
    try:
        return metadata.version("ce-autoconf")
    except metadata.PackageNotFoundError:
        return "unknown"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document shipped beside this module."""
    text = resources.files("dhcp_server").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


# == the server ================================================================================


class ApiServer:
    """The management API on one TCP address. Start with :meth:`start`, stop with :meth:`close`.

    ``clock`` must be the engine's clock (wall-clock seconds, as the driver's). ``store``,
    when the server's store is wrapped in :class:`~dhcp_server.metrics.TimedStore`, adds
    commit count and latency to ``/metrics``.
    """

    def __init__(
        self,
        manager: Manager,
        token: bytes,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        metrics_require_token: bool = False,
        clock: Callable[[], float] = time.time,
        store: TimedStore | None = None,
        max_body: int = 64 * 1024,
        max_header: int = 16 * 1024,
        request_timeout: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        if len(token) < _MIN_TOKEN:
            raise TokenFileError(f"the API token must be at least {_MIN_TOKEN} characters")
        self.manager = manager
        self._token = b"Bearer " + token
        self.host = host
        self.port = port
        self.metrics_require_token = metrics_require_token
        self.clock = clock
        self.store = store
        self.max_body = max_body
        self.max_header = max_header
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._openapi: dict[str, Any] | None = None

    @property
    def engine(self) -> ServerEngine:
        return self.manager.engine

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        log_event(log, "api.listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- connections ----------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > self.max_connections:
                await self._refuse(writer)
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        # h11 answers only a request it has read; this answer goes before any is read.
        body = b'{"error":"too many connections"}\n'
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), self.request_timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header)
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        while True:
            try:
                async with asyncio.timeout(self.request_timeout):
                    incoming = await self._read_request(conn, reader)
            except TimeoutError:
                if conn.their_state is h11.SEND_BODY or conn.trailing_data[0]:
                    await self._send(conn, writer, Response(408, {"error": "request timeout"}), close=True)
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                status = 431 if status == 431 else 400
                await self._send(
                    conn, writer, Response(status, {"error": "malformed HTTP request"}), close=True
                )
                return
            except _TooLargeError:
                await self._send(
                    conn,
                    writer,
                    Response(413, {"error": f"the body exceeds {self.max_body} bytes"}),
                    close=True,
                )
                return
            except _ClosedError:
                return
            started = time.perf_counter()
            response = await self.dispatch(incoming)
            keep_alive = await self._send(conn, writer, response, close=False)
            log_event(
                log,
                "api.request",
                method=incoming.method,
                path=incoming.path,
                status=response.status,
                ms=round((time.perf_counter() - started) * 1000, 3),
                peer=peer_text,
            )
            if not keep_alive:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                raise _ClosedError
            return event

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request:
        event = await self._next_event(conn, reader)
        if not isinstance(event, h11.Request):
            raise _ClosedError
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _TooLargeError
        body = bytearray()
        while True:
            part = await self._next_event(conn, reader)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.max_body:
                    raise _TooLargeError
            elif isinstance(part, h11.EndOfMessage):
                break
        target = urlsplit(event.target.decode("latin-1"))
        return Request(
            method=event.method.decode("ascii", "replace").upper(),
            path=target.path,
            params={},
            query=parse_qs(target.query),
            headers=headers,
            body=bytes(body),
        )

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *, close: bool
    ) -> bool:
        """Write ``response``; True if the connection may carry another request."""
        # IDLE: an answer to a request h11 could not parse (it allows one, as a server).
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        body = response.encode()
        headers = [
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("server", "ce-autoconf"),
            *response.headers,
        ]
        if body:
            headers.insert(0, ("content-type", response.content_type))
        if close:
            headers.append(("connection", "close"))
        try:
            data = conn.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=_REASONS.get(response.status, b""),
                )
            )
            if body:
                data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return False
        writer.write(data)
        async with asyncio.timeout(self.request_timeout):
            await writer.drain()
        return not close and all(state is h11.DONE for state in conn.states.values())

    # -- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        """Route one request and turn every failure into a JSON error response."""
        path = request.path.rstrip("/") or "/"
        segments = [unquote(s) for s in path.strip("/").split("/")]
        allowed: list[str] = []
        for route in _ROUTES:
            params = route.match(segments)
            if params is None:
                continue
            allowed.append(route.method)
            if route.method != request.method:
                continue
            if self._needs_token(route) and not self._authorised(request):
                return Response(
                    401,
                    {"error": "missing or wrong bearer token"},
                    headers=[("www-authenticate", 'Bearer realm="ce-autoconf"')],
                )
            try:
                return await route.handler(
                    self,
                    Request(request.method, path, params, request.query, request.headers, request.body),
                )
            except ApiError as exc:
                return Response(exc.status, exc.body())
            except DirectoryError as exc:
                return Response(409, {"error": str(exc)})
            except Exception:
                log.exception("internal error serving %s %s", request.method, path)
                return Response(500, {"error": "internal error; see the server's log"})
        if allowed:
            return Response(
                405, {"error": "method not allowed"}, headers=[("allow", ", ".join(sorted(set(allowed))))]
            )
        return Response(404, {"error": "no such resource"})

    def _needs_token(self, route: Route) -> bool:
        if route.template == "/metrics":
            return self.metrics_require_token
        return route.auth

    def _authorised(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").encode("latin-1")
        return hmac.compare_digest(given, self._token)

    async def _change(self, operation: Callable[[float], Outcome]) -> Outcome:
        try:
            return await self.manager.manage(operation)
        except (ApiError, DirectoryError, KeyError, LookupError):
            raise
        except Exception as exc:
            log_event(log, "api.commit_failed", logging.ERROR, error=type(exc).__name__)
            raise ApiError(
                503, "the store could not commit the change; nothing was applied durably"
            ) from None

    # -- handlers: VPNs -------------------------------------------------------------------------

    def _vpn_id(self, request: Request) -> int:
        text = request.params["vpn_id"]
        if not text.isdigit() or int(text) > _U32:
            raise _bad("vpn_id", "must be an integer from 0 to 4294967295")
        return int(text)

    @_route("GET", "/v1/vpns")
    async def list_vpns(self, request: Request) -> Response:
        engine = self.engine
        vpns = sorted(engine.directory.vpns.values(), key=lambda v: v.vpn_id)
        return Response(200, {"vpns": [_vpn_json(engine, v) for v in vpns]})

    @_route("POST", "/v1/vpns")
    async def create_vpn(self, request: Request) -> Response:
        vpn = _parse_vpn(request.json(), None)
        engine = self.engine

        def operation(now: float) -> Outcome:
            if vpn.vpn_id in engine.directory.vpns:
                raise ApiError(409, f"VPN {vpn.vpn_id} exists; PUT /v1/vpns/{vpn.vpn_id} replaces it", "id")
            return engine.put_vpn(vpn, now)

        await self._change(operation)
        log_event(log, "api.vpn.created", vpn=vpn.vpn_id, name=vpn.name)
        return Response(201, _vpn_json(engine, vpn), headers=[("location", f"/v1/vpns/{vpn.vpn_id}")])

    @_route("GET", "/v1/vpns/{vpn_id}")
    async def get_vpn(self, request: Request) -> Response:
        vpn_id = self._vpn_id(request)
        vpn = self.engine.directory.vpns.get(vpn_id)
        if vpn is None:
            raise ApiError(404, f"no VPN {vpn_id}")
        return Response(200, _vpn_json(self.engine, vpn))

    @_route("PUT", "/v1/vpns/{vpn_id}")
    async def put_vpn(self, request: Request) -> Response:
        vpn = _parse_vpn(request.json(), self._vpn_id(request))
        engine = self.engine
        created = False

        def operation(now: float) -> Outcome:
            nonlocal created
            created = vpn.vpn_id not in engine.directory.vpns
            return engine.put_vpn(vpn, now)

        await self._change(operation)
        log_event(log, "api.vpn.created" if created else "api.vpn.updated", vpn=vpn.vpn_id, name=vpn.name)
        return Response(201 if created else 200, _vpn_json(engine, vpn))

    @_route("DELETE", "/v1/vpns/{vpn_id}")
    async def delete_vpn(self, request: Request) -> Response:
        vpn_id = self._vpn_id(request)
        engine = self.engine

        def operation(now: float) -> Outcome:
            if vpn_id not in engine.directory.vpns:
                raise ApiError(404, f"no VPN {vpn_id}")
            return engine.delete_vpn(vpn_id, now)

        await self._change(operation)
        log_event(log, "api.vpn.deleted", vpn=vpn_id)
        return Response(204)

    # -- handlers: CEs --------------------------------------------------------------------------

    def _ce_name(self, request: Request) -> str:
        return _name(request.params["name"], "name")

    @_route("GET", "/v1/ces")
    async def list_ces(self, request: Request) -> Response:
        engine, now = self.engine, self.clock()
        ces = sorted(engine.directory.ces.values(), key=lambda c: c.name)
        return Response(200, {"ces": [_ce_json(engine, ce, now) for ce in ces]})

    @_route("GET", "/v1/ces/{name}")
    async def get_ce(self, request: Request) -> Response:
        name = self._ce_name(request)
        ce = self.engine.directory.get_ce(name)
        if ce is None:
            raise ApiError(404, f"no CE {name}")
        return Response(200, _ce_json(self.engine, ce, self.clock()))

    @_route("PUT", "/v1/ces/{name}")
    async def put_ce(self, request: Request) -> Response:
        name = self._ce_name(request)
        parsed = _parse_ce(request.json(), name)
        ce, key = parsed.ce, parsed.key
        engine = self.engine
        created = False

        def operation(now: float) -> Outcome:
            nonlocal created
            directory = engine.directory
            vpns = directory.vpns
            for vpn_id in sorted(ce.vpns):
                if vpn_id not in vpns:
                    raise ApiError(409, f"no VPN {vpn_id}", "vpns")
            if ce.client is not None:
                holder = directory.ce_by_client(ce.client)
                if holder is not None and holder.name != ce.name:
                    raise ApiError(
                        409, f"the client already belongs to CE {holder.name}", parsed.client_field
                    )
            if ce.secret_id is not None:
                holder = directory.ce_by_secret(ce.secret_id)
                if holder is not None and holder.name != ce.name:
                    raise ApiError(
                        409, f"secret ID {ce.secret_id} already belongs to CE {holder.name}", "secret_id"
                    )
                if key is None and directory.key(ce.secret_id) is None:
                    raise _bad("key", f"required: secret ID {ce.secret_id} has no key yet")
            created = directory.get_ce(ce.name) is None
            return engine.put_ce(ce, key, now)

        await self._change(operation)
        log_event(
            log,
            "api.ce.created" if created else "api.ce.updated",
            ce=ce.name,
            client=str(ce.client) if ce.client is not None else None,
            secret_id=ce.secret_id,
            key_set=key is not None,
            vpns=sorted(ce.vpns),
        )
        body = _ce_json(engine, ce, self.clock())
        return Response(201 if created else 200, body, headers=[("location", f"/v1/ces/{ce.name}")])

    @_route("DELETE", "/v1/ces/{name}")
    async def delete_ce(self, request: Request) -> Response:
        name = self._ce_name(request)
        engine = self.engine

        def operation(now: float) -> Outcome:
            if engine.directory.get_ce(name) is None:
                raise ApiError(404, f"no CE {name}")
            return engine.delete_ce(name, now)

        await self._change(operation)
        log_event(log, "api.ce.deleted", ce=name)
        return Response(204)

    @_route("POST", "/v1/ces/{name}/forcerenew")
    async def forcerenew(self, request: Request) -> Response:
        name = self._ce_name(request)
        engine = self.engine

        def operation(now: float) -> Outcome:
            ce = engine.directory.get_ce(name)
            if ce is None:
                raise ApiError(404, f"no CE {name}")
            if ce.client is None:
                raise ApiError(409, f"CE {name} has no DHCP client identity (hw or client_id)")
            try:
                return engine.forcerenew_ce(name, now)
            except KeyError:
                raise ApiError(404, f"no CE {name}") from None
            except LookupError as exc:
                raise ApiError(409, str(exc).strip("'\"")) from None

        await self._change(operation)
        ce = engine.directory.get_ce(name)
        client = ce.client if ce is not None else None
        log_event(log, "api.forcerenew", ce=name, client=str(client) if client is not None else None)
        pending = next((p for p in engine.forcerenews.outstanding() if p.client == client), None)
        body: dict[str, object] = {"ce": name, "client": str(client) if client is not None else None}
        if pending is not None:
            body |= {"reason": pending.reason, "attempts": pending.attempts, "next": _time(pending.due)}
        return Response(202, body)

    # -- handlers: state ------------------------------------------------------------------------

    @_route("GET", "/v1/leases")
    async def list_leases(self, request: Request) -> Response:
        engine, now = self.engine, self.clock()
        wanted = request.query.get("state")
        states = {s.value for s in LeaseState}
        if wanted is not None and not set(wanted) <= states:
            raise _bad("state", "must be one of " + ", ".join(sorted(states)))
        leases = sorted(engine.leases.leases(), key=lambda lease: int(lease.address))
        items = [_lease_json(engine, lease, now) for lease in leases]
        if wanted is not None:
            items = [item for item in items if item["state"] in wanted]
        return Response(200, {"leases": items})

    @_route("GET", "/v1/forcerenews")
    async def list_forcerenews(self, request: Request) -> Response:
        engine = self.engine
        items = [
            {
                "client": str(p.client),
                "ce": _ce_name(engine, p.client),
                "reason": p.reason,
                "since": _time(p.since),
                "next": _time(p.due),
                "attempts": p.attempts,
            }
            for p in engine.forcerenews.outstanding()
        ]
        return Response(200, {"forcerenews": items})

    @_route("GET", "/v1/quarantine")
    async def list_quarantine(self, request: Request) -> Response:
        engine = self.engine
        items = [
            {"client": str(client), "ce": _ce_name(engine, client), "until": _time(until)}
            for client, until in sorted(engine.quarantine.quarantined(self.clock()), key=lambda q: q[1])
        ]
        return Response(200, {"quarantined": items})

    @_route("DELETE", "/v1/quarantine/{client}")
    async def release_quarantine(self, request: Request) -> Response:
        client = parse_client(request.params["client"])
        engine = self.engine
        now = self.clock()
        if client not in {c for c, _ in engine.quarantine.quarantined(now)}:
            raise ApiError(404, "that client is not quarantined")
        engine.quarantine.release(client)
        log_event(log, "api.quarantine.released", client=str(client))
        return Response(204)

    @_route("GET", "/v1/status")
    async def status(self, request: Request) -> Response:
        engine, now = self.engine, self.clock()
        driver_counters = getattr(self.manager, "counters", None)
        body: dict[str, object] = {
            "version": _version(),
            "server_id": str(engine.config.server_id),
            "time": _time(now),
            "leases": lease_states(engine, now),
            "vpns": len(engine.directory.vpns),
            "ces": len(engine.directory.ces),
            "forcerenew_outstanding": len(engine.forcerenews.outstanding()),
            "quarantined": len(engine.quarantine.quarantined(now)),
            "counters": dict(sorted(engine.counters.items())),
            "driver": dict(sorted(driver_counters.items())) if isinstance(driver_counters, Mapping) else {},
        }
        return Response(200, body)

    # -- handlers: unversioned ------------------------------------------------------------------

    @_route("GET", "/metrics")
    async def metrics(self, request: Request) -> Response:
        driver_counters = getattr(self.manager, "counters", None)
        text = render_metrics(
            self.engine,
            self.clock(),
            driver_counters=driver_counters if isinstance(driver_counters, Mapping) else None,
            store=self.store,
        )
        return Response(200, text, content_type=METRICS_CONTENT_TYPE)

    @_route("GET", "/openapi.json", auth=False)
    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = openapi_document()
        return Response(200, self._openapi)


#: Every (method, path template) the server answers; the OpenAPI document lists the same.
ROUTES: Final[tuple[tuple[str, str], ...]] = tuple((r.method, r.template) for r in _ROUTES)


def routes() -> Iterable[Route]:
    return tuple(_ROUTES)


async def start_api(
    manager: Manager,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token_file: str | Path,
    metrics_require_token: bool = False,
    store: TimedStore | None = None,
    clock: Callable[[], float] = time.time,
) -> ApiServer:
    """Read the token file and start the API beside a running driver (``[api]`` of the TOML:
    ``start_api(driver, host=cfg.api.host, port=cfg.api.port, token_file=cfg.api.token_file)``)."""
    server = ApiServer(
        manager,
        load_token(token_file),
        host=host,
        port=port,
        metrics_require_token=metrics_require_token,
        store=store,
        clock=clock,
    )
    await server.start()
    return server
