"""``ce-autoconf client``'s TOML configuration (examples/client.toml), read into typed values.

The RFC 3118 key lives in a file of its own (hexadecimal, mode 0600, owned by us) so the
configuration can be shared and logged; no error message ever quotes key material.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhcp_client.config import ClientConfig

__all__ = ["ClientSettings", "SettingsError", "load_settings", "read_key_file"]

_SEPARATORS = re.compile(r"[\s:]+")
_KNOWN = {
    "interface",
    "hardware_address",
    "state_file",
    "key_file",
    "secret_id",
    "hostname",
    "apply_address",
    "default_route",
    "options",
    "limits",
    "timing",
}


class SettingsError(ValueError):
    """The configuration is unusable; the message names the file and field, never a key."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    interface: str
    state_file: Path
    apply_address: bool
    default_route: bool
    client: ClientConfig


def read_key_file(path: Path) -> bytes:
    """The key in ``path``: hexadecimal, separators allowed; the file must be private."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot open the key file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise SettingsError(f"{path}: the key file is not a regular file")
        if mode & 0o077:
            raise SettingsError(f"{path}: key file has mode {mode:04o}; it must be 0600 (chmod 600 {path})")
        if st.st_uid != os.geteuid():
            raise SettingsError(f"{path}: key file is owned by uid {st.st_uid}, not by us")
        raw = os.read(fd, 8192)
    finally:
        os.close(fd)
    digits = _SEPARATORS.sub("", raw.decode("ascii", "replace").strip().removeprefix("0x"))
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise SettingsError(f"{path}: the key file does not hold hexadecimal digits") from None
    if len(key) < 16:
        raise SettingsError(f"{path}: the key is {len(key)} octets; use at least 16")
    return key


def _hardware_address(interface: str, configured: object) -> bytes:
    text = configured if isinstance(configured, str) else None
    if text is None:
        try:
            text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
        except OSError:
            raise SettingsError(f"no hardware_address given and interface {interface} has none") from None
    try:
        return bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        raise SettingsError(f"hardware_address {text!r} is not hexadecimal") from None


def load_settings(path: Path) -> ClientSettings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    unknown = set(data) - _KNOWN
    if unknown:
        raise SettingsError(f"{path}: unknown settings {sorted(unknown)}")
    try:
        interface = _str(data, "interface")
        key_file = data.get("key_file")
        secret_id = data.get("secret_id")
        if (key_file is None) != (secret_id is None):
            raise SettingsError("give both key_file and secret_id (RFC 3118), or neither (RFC 6704 only)")
        key = None
        if key_file is not None:
            key_path = Path(str(key_file))
            key = read_key_file(key_path if key_path.is_absolute() else path.parent / key_path)
        options: dict[str, Any] = dict(data.get("options", {}))
        limits: dict[str, Any] = dict(data.get("limits", {}))
        timing: dict[str, Any] = dict(data.get("timing", {}))
        client = ClientConfig(
            hardware_address=_hardware_address(interface, data.get("hardware_address")),
            secret_id=None if secret_id is None else int(secret_id),
            key=key,
            hostname=data.get("hostname"),
            **options,
            **limits,
            **timing,
        )
        state_file = Path(_str(data, "state_file"))
        return ClientSettings(
            interface=interface,
            state_file=state_file if state_file.is_absolute() else path.parent / state_file,
            apply_address=bool(data.get("apply_address", True)),
            default_route=bool(data.get("default_route", True)),
            client=client,
        )
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None


def _str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{name} is required (a string)")
    return value
