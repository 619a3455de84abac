"""A real management API server on 127.0.0.1 (ephemeral port) over the in-memory adapter.

The server runs in its own thread's event loop, as it would beside the UDP driver; tests
talk to it with http.client (or the CLI's urllib) and look at the engine through
:meth:`ApiThread.call`, which runs a function in the loop's thread. Every JSON response
:meth:`ApiThread.request` receives is checked against the OpenAPI document's schema for
that route and status, so the document cannot drift from what the server says.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from engine_helpers import REGISTRY, SERVER_ID, UNSPECIFIED, Client, config
from openapi_schema_validator import OAS31Validator, oas31_format_checker

from dhcp_server.actions import Received
from dhcp_server.api import ApiServer, LocalManager, openapi_document, routes
from dhcp_server.engine import ServerEngine
from dhcp_server.logs import JsonFormatter
from dhcp_server.model import ServerConfig
from dhcp_server.store import MemoryStore, Store
from options import DhcpMessage, MessageType, decode_message

T = TypeVar("T")

TOKEN = "test-token-0123456789abcdef"
START = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def text(self) -> str:
        return self.raw.decode()


class LogCapture(logging.Handler):
    """Every record of every logger, formatted by the JSON formatter (and kept raw too)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock2:
            self.records.append(record)
            self.lines.append(line)

    def events(self) -> list[dict[str, Any]]:
        with self._lock2:
            return [json.loads(line) for line in self.lines]

    def text(self) -> str:
        with self._lock2:
            return "\n".join(self.lines) + "\n" + "\n".join(map(str, (vars(r) for r in self.records)))


_VALIDATION_DOCUMENT = openapi_document()


def _template_of(method: str, path: str) -> str | None:
    segments = path.split("?", maxsplit=1)[0].rstrip("/").strip("/").split("/")
    for route in routes():
        if route.method == method and route.match(segments) is not None:
            return route.template
    return None


def check_against_document(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """The response's body validates against the document's schema for this route and status."""
    template = _template_of(method, path)
    if template is None:  # 404/405 for unknown routes: the error shape still holds
        assert json.loads(body).keys() <= {"error", "field"}
        return
    operation = _VALIDATION_DOCUMENT["paths"][template][method.lower()]
    responses = operation["responses"]
    documented = str(status) if str(status) in responses else "default"
    assert status >= 400 or documented != "default", f"{method} {template} answered {status}, not documented"
    spec = responses[documented]
    if "$ref" in spec:
        spec = _VALIDATION_DOCUMENT["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    content = spec.get("content")
    if content is None:
        assert body == b"", f"{method} {template} {status} has a body the document does not describe"
        return
    media = content_type.split(";", maxsplit=1)[0].strip()
    assert media in content, f"{method} {template} {status}: {media} not in {list(content)}"
    schema = content[media]["schema"]
    if media != "application/json":
        return
    root = {**schema, "components": _VALIDATION_DOCUMENT["components"]}
    OAS31Validator(root, format_checker=oas31_format_checker).validate(json.loads(body))


class ApiThread:
    """An :class:`ApiServer` over a :class:`LocalManager` in a background event loop."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        server_config: ServerConfig | None = None,
        store: Store | None = None,
        **server_options: Any,
    ) -> None:
        self.clock = FakeClock()
        self.engine = ServerEngine(server_config or config())
        self.store: Store = store if store is not None else MemoryStore()
        self.manager = LocalManager(self.engine, self.store, self.clock)
        self.token_file = tmp_path / "api.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="api-test-loop", daemon=True)
        self._thread.start()
        self.server = ApiServer(
            self.manager, TOKEN.encode(), host="127.0.0.1", port=0, clock=self.clock, **server_options
        )
        self.call_async(self.server.start())
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def call_async(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the server's thread (where the engine lives) and return its result."""

        async def run() -> T:
            return fn()

        result: T = self.call_async(run())
        return result

    def close(self) -> None:
        self.call_async(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        connection: http.client.HTTPConnection | None = None,
    ) -> HttpReply:
        conn = connection or self.connection()
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            reply = HttpReply(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            if connection is None:
                conn.close()
        if reply.raw or reply.status != 204:
            check_against_document(
                method, path, reply.status, reply.headers.get("content-type", ""), reply.raw
            )
        return reply

    # -- DHCP clients -------------------------------------------------------------------------

    def send(self, payload: bytes) -> list[DhcpMessage]:
        """One datagram from a client on eth0, through the engine; the decoded replies."""
        before = self.call(lambda: len(self.manager.sent))
        self.call(lambda: self.manager.receive(Received(payload, UNSPECIFIED, 68, "eth0")))
        replies = self.call(lambda: list(self.manager.sent[before:]))
        return [decode_message(r.payload, REGISTRY) for r in replies]

    def bind(self, client: Client) -> IPv4Address:
        """DISCOVER then REQUEST; the leased address."""
        (offer,) = self.send(client.message(MessageType.DHCPDISCOVER, with_mac=False))
        assert offer.message_type is MessageType.DHCPOFFER
        (ack,) = self.send(
            client.message(
                MessageType.DHCPREQUEST, requested=offer.yiaddr, server_id=SERVER_ID, new_xid=False
            )
        )
        assert ack.message_type is MessageType.DHCPACK
        client.address = ack.yiaddr
        return ack.yiaddr


@contextlib.contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Attach a :class:`LogCapture` to the root logger at DEBUG for the duration."""
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


__all__ = [
    "START",
    "TOKEN",
    "ApiThread",
    "FakeClock",
    "HttpReply",
    "LogCapture",
    "capture_logs",
    "check_against_document",
]
