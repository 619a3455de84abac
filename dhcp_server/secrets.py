"""RFC 3118 keys from a file of their own, and the redaction that keeps keys out of logs.

The secrets file is TOML, kept apart from the configuration so the configuration can be
shared, reviewed and logged::

    [[key]]
    secret_id = 0x00001234
    key = "7264632d7365637265742d6b65792d31"   # hexadecimal

    [[key]]
    secret_id = 0x00001235
    key_file = "keys/ce-1235.key"               # a file holding the key in hexadecimal

The file (and every ``key_file``) must belong to the user the server runs as and be mode
0600 or stricter; anything else is refused before a byte is parsed. No error message
quotes key material: it names the file, the line and the field, never the value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from dhcp_server.config import (
    ConfigError,
    FieldError,
    Problem,
    Reader,
    Table,
    integer,
    kind,
    syntax_problem,
)
from dhcp_server.config import NotPrivateError as _NotPrivateError
from dhcp_server.config import read_private as _read_private

__all__ = ["MIN_KEY_LENGTH", "REDACTED", "SecretsError", "load_secrets", "redact"]

#: 128 bits: HMAC-MD5 (RFC 3118 delayed authentication) gains nothing from shorter keys
#: except weakness.
MIN_KEY_LENGTH: Final = 16
MAX_KEY_LENGTH: Final = 1024
REDACTED: Final = "<redacted>"
_SEPARATORS: Final = re.compile(r"[\s:]+")
#: Field names whose values are key material wherever they appear in a log event.
_SENSITIVE: Final = frozenset({"key", "keys", "secret", "secrets", "token", "password", "nonce", "auth_key"})


class SecretsError(ConfigError):
    """The secrets file is unusable; the message never contains key material."""


def _hex_key(value: object) -> bytes:
    """A key in hexadecimal; separators (spaces, colons) allowed. Messages carry no digits."""
    if not isinstance(value, str):
        raise FieldError(f"expected the key in hexadecimal as a string, got {kind(value)}")
    digits = _SEPARATORS.sub("", value.removeprefix("0x"))
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise FieldError(
            f"is not hexadecimal ({len(digits)} characters after removing separators; "
            "expected an even number of 0-9, a-f)"
        ) from None
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise FieldError(f"is {len(key)} octets; keys are {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} octets")
    return key


def _key_from_file(base: Path) -> Callable[[object], bytes]:
    def convert(value: object) -> bytes:
        if not isinstance(value, str) or not value:
            raise FieldError(f"expected a file name, got {kind(value)}")
        path = base / value
        try:
            raw = _read_private(path)
        except _NotPrivateError as e:
            raise FieldError(f"{path} {e}") from None
        except OSError as e:
            raise FieldError(f"cannot read {path}: {e.strerror}") from None
        try:
            return _hex_key(raw.decode("ascii").strip())
        except UnicodeDecodeError:
            raise FieldError(f"{path} does not hold a hexadecimal key") from None
        except FieldError as e:
            raise FieldError(f"{path}: key {e.message}") from None

    return convert


def load_secrets(path: str | os.PathLike[str]) -> dict[int, bytes]:
    """RFC 3118 keys by secret ID, from a private TOML file; raises :class:`SecretsError`."""
    file = Path(path)
    try:
        raw = _read_private(file)
    except _NotPrivateError as e:
        raise SecretsError([Problem(str(file), None, "", str(e))]) from None
    except OSError as e:
        raise SecretsError([Problem(str(file), None, "", f"cannot read: {e.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError([Problem(str(file), None, "", "is not UTF-8 text")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SecretsError([syntax_problem(str(file), text, e, quiet=True)]) from None
    reader = Reader(str(file), text)
    root = reader.root(data)
    keys: dict[int, bytes] = {}
    where: dict[int, int] = {}
    from_file = _key_from_file(file.parent)
    for i, entry in enumerate(root.tables("key")):
        secret_id = entry.require("secret_id", integer(0, 0xFFFFFFFF))
        key = _one_key(entry, from_file)
        entry.done()
        if secret_id is None or key is None:
            continue
        if secret_id in where:
            entry.fail("secret_id", f"secret ID {secret_id:#x} is already key[{where[secret_id]}]'s")
            continue
        where[secret_id] = i
        keys[secret_id] = key
    root.done()
    if reader.problems:
        raise SecretsError(reader.problems)
    return keys


def _one_key(entry: Table, from_file: Callable[[object], bytes]) -> bytes | None:
    if ("key" in entry) == ("key_file" in entry):
        entry.known("key", "key_file")
        entry.fail(None, "needs exactly one of key or key_file")
        return None
    if "key" in entry:
        return entry.get("key", _hex_key, None)
    return entry.get("key_file", from_file, None)


def redact(value: object) -> object:
    """A copy of a log event's fields with key material replaced.

    Values under sensitive names (key, secret, token, nonce...) become ``<redacted>``,
    any ``bytes`` become their length (a key is bytes; an identifier worth logging is
    rendered by its owner first), nested mappings and sequences are walked.
    """
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in _SENSITIVE else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
