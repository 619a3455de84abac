"""Structured logs: one JSON object per line, and a guard that keeps key material out of them.

Every line has ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``event`` and ``fields``::

    {"ts":"2027-01-15T08:00:00.123Z","level":"info","logger":"dhcp_server.api",
     "event":"api.ce.put","fields":{"ce":"ce-7","secret_id":7,"key_set":true}}

Three kinds of record become such a line:

- records made by :func:`log_event` (engine :class:`~dhcp_server.actions.Event` values and
  the API's own actions): the event name and fields travel on the record;
- records whose message is already a JSON object with an ``"event"`` member (what
  :mod:`dhcp_server.driver` writes on ``dhcp_server.events``): parsed back into the shape;
- any other record: ``event`` is ``"log"`` and the message is the ``message`` field.

The redaction guard: a field whose name says it is a key, secret or token (``key``,
``psk_key``, ``secret``, ``token``...) may only carry an integer, a boolean or ``None``
(``secret_id`` is fine; the key itself is not). :func:`log_event` raises
:class:`SecretFieldError` for anything else, and the formatter, for records that reach it
another way, replaces the whole field set with a ``log.redacted`` line naming the field,
never its value.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Final

from dhcp_server.actions import Event
from dhcp_server.model import ClientKey

__all__ = [
    "JsonFormatter",
    "SecretFieldError",
    "check_fields",
    "install_json_logging",
    "log_event",
]

#: Field names that hold key material when their value is not a plain number or flag.
_SENSITIVE: Final = re.compile(r"(?:^|_)(?:keys?|secrets?|tokens?|passwords?|psk)(?:$|_)", re.IGNORECASE)
#: Nesting deeper than this is not walked (and not serialised).
_MAX_DEPTH: Final = 8
_EVENT_ATTR: Final = "ceautoconf_event"
_FIELDS_ATTR: Final = "ceautoconf_fields"


class SecretFieldError(ValueError):
    """A log field named like a key, secret or token carries something other than a number or flag."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"refusing to log field {path!r}: it is named like key material")


def _allowed_sensitive(value: object) -> bool:
    return value is None or isinstance(value, int)  # bool is an int


def check_fields(fields: Mapping[str, object], _prefix: str = "", _depth: int = 0) -> None:
    """Raise :class:`SecretFieldError` if a key-, secret- or token-named field holds material."""
    for name, value in fields.items():
        path = f"{_prefix}{name}"
        if _SENSITIVE.search(str(name)) and not _allowed_sensitive(value):
            raise SecretFieldError(path)
        if _depth < _MAX_DEPTH:
            if isinstance(value, Mapping):
                check_fields(value, path + ".", _depth + 1)
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    if isinstance(item, Mapping):
                        check_fields(item, f"{path}[{i}].", _depth + 1)


def _json_default(value: object) -> object:
    # IPv4Address, ClientKey, Path, enums...: their str() is what an operator reads. Bytes are
    # never written raw: only their length, so an unnamed blob cannot leak material either.
    # A ClientKey is bytes too, but it is an identity, not material: its str() is the log form.
    # (The engine hands objects, not strings, so a server logging at WARNING never formats them.)
    if isinstance(value, ClientKey):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def log_event(
    logger: logging.Logger,
    event: Event | str,
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """Log one structured event; an :class:`Event` brings its own fields (``fields`` are added).

    Raises :class:`SecretFieldError` before anything is logged if a field would carry key material.
    """
    if isinstance(event, Event):
        name = event.name
        merged: dict[str, object] = {**dict(event.fields), **fields}
    else:
        name, merged = event, dict(fields)
    check_fields(merged)
    if logger.isEnabledFor(level):
        logger.log(level, "%s", name, extra={_EVENT_ATTR: name, _FIELDS_ATTR: merged})


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = self._event_and_fields(record)
        try:
            check_fields(fields)
        except SecretFieldError as exc:
            event, fields = "log.redacted", {"refused_event": event, "field": exc.path}
        line: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
            "fields": fields,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=_json_default, separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def _timestamp(created: float) -> str:
        moment = datetime.fromtimestamp(created, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    @staticmethod
    def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, object]]:
        name = getattr(record, _EVENT_ATTR, None)
        if isinstance(name, str):
            fields = getattr(record, _FIELDS_ATTR, None)
            return name, dict(fields) if isinstance(fields, Mapping) else {}
        message = record.getMessage()
        if message.startswith("{") and message.endswith("}"):
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("event"), str):
                event = parsed.pop("event")
                return event, parsed
        return "log", {"message": message}


def install_json_logging(
    stream: IO[str] | None = None, level: int = logging.INFO, logger: logging.Logger | None = None
) -> logging.Handler:
    """Send ``logger``'s records (default: the root logger) as JSON lines to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    target = logger if logger is not None else logging.getLogger()
    target.addHandler(handler)
    target.setLevel(level)
    return handler
