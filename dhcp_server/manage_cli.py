"""``ce-autoconf vpn|ce|lease|forcerenew|quarantine``: the management API from a shell.

An HTTP client (urllib) of :mod:`dhcp_server.api`. Where the API is and how to get in::

    --api URL          default $CE_AUTOCONF_API, else http://127.0.0.1:8067
    --token-file FILE  default $CE_AUTOCONF_TOKEN_FILE; the file must be mode 0600

Output is a table, or the API's JSON with ``--json``. A CE's RFC 3118 key is read from
``--key-file`` (mode 0600, the key in hex) and never taken on the command line, where
``ps`` and shell history would show it. Exit status: 0 done, 1 the API said no (or could
not be reached), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import quote, urlsplit

__all__ = ["COMMANDS", "ApiCallError", "UsageError", "add_arguments", "run"]

DEFAULT_API: Final = "http://127.0.0.1:8067"
API_ENV: Final = "CE_AUTOCONF_API"
TOKEN_ENV: Final = "CE_AUTOCONF_TOKEN_FILE"  # noqa: S105 - a variable name, not a token
_HEX_SEPARATORS: Final = re.compile(r"[\s:.-]")
_KEY_SHAPED: Final = re.compile(r"(?:[0-9A-Fa-f]{2}[:\s-]?){8,}")

#: The top-level commands this module adds to ``ce-autoconf``, with their help.
COMMANDS: Final = {
    "vpn": "manage VPNs (add, list, delete) through the server's API",
    "ce": "manage customer-edge routers (add, list, delete) through the server's API",
    "lease": "show the server's leases",
    "forcerenew": "send a CE a FORCERENEW now",
    "quarantine": "list or release quarantined clients",
}


class UsageError(Exception):
    """Arguments that parse but cannot be used (reported as a usage error, exit 2)."""


class ApiCallError(Exception):
    """The API refused, or could not be reached (exit 1)."""


# == arguments ===================================================================================


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", metavar="URL", default=None, help=f"the API's base URL (${API_ENV}, default {DEFAULT_API})"
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        default=None,
        help=f"the API token, mode 0600 (${TOKEN_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Fill ``parser`` (the ``ce-autoconf COMMAND`` subparser) for ``command``."""
    if command == "forcerenew":
        parser.add_argument("ce", metavar="CE", help="the CE's name")
        _common(parser)
        parser.set_defaults(action=_forcerenew)
        return
    actions = parser.add_subparsers(dest="action_name", metavar="ACTION", required=True)

    def add_action(name: str, help_text: str) -> argparse.ArgumentParser:
        # No abbreviations: "--key" must never be taken for "--key-file".
        return actions.add_parser(name, help=help_text, allow_abbrev=False)

    if command == "vpn":
        add = add_action("add", "create a VPN (--replace to overwrite one)")
        add.add_argument("vpn_id", metavar="ID", type=int, help="the VPN ID (32 bits)")
        add.add_argument("name", metavar="NAME")
        add.add_argument(
            "--server", dest="servers", action="append", default=[], metavar="ADDRESS",
            help="a VPN configuration server (repeat for more)",
        )  # fmt: skip
        add.add_argument("--auth", choices=("required", "optional", "off"), default="required")
        add.add_argument("--replace", action="store_true", help="replace the VPN if it exists")
        add.set_defaults(action=_vpn_add)
        _common(add)
        listing = add_action("list", "list VPNs")
        listing.set_defaults(action=_vpn_list)
        _common(listing)
        delete = add_action("delete", "delete a VPN that has no members left")
        delete.add_argument("vpn_id", metavar="ID", type=int)
        delete.set_defaults(action=_vpn_delete)
        _common(delete)
    elif command == "ce":
        add = add_action("add", "create or replace a CE (by name)")
        add.add_argument("name", metavar="NAME")
        who = add.add_mutually_exclusive_group()
        who.add_argument("--hw", metavar="MAC", help="its hardware address")
        who.add_argument("--client-id", metavar="HEX", help="its client identifier (option 61), in hex")
        add.add_argument("--htype", type=int, metavar="N", help="hardware type with --hw (default 1)")
        add.add_argument("--secret-id", type=int, metavar="N", help="RFC 3118 secret ID of its key")
        add.add_argument(
            "--key-file", type=Path, metavar="FILE",
            help="its RFC 3118 key, in hex, in a file of mode 0600 (omit to keep the stored key)",
        )  # fmt: skip
        add.add_argument(
            "--vpn", dest="vpns", action="append", type=int, default=[], metavar="ID",
            help="a VPN it belongs to (repeat for more)",
        )  # fmt: skip
        add.add_argument("--static-address", metavar="ADDRESS", help="its address, when not from our DHCP")
        # Not an option: caught so that argparse neither takes it for --key-file nor quotes it.
        add.add_argument("--key", dest="key_on_command_line", nargs="?", const="", help=argparse.SUPPRESS)
        add.set_defaults(action=_ce_add)
        _common(add)
        listing = add_action("list", "list CEs (keys are never shown)")
        listing.set_defaults(action=_ce_list)
        _common(listing)
        delete = add_action("delete", "delete a CE and its key")
        delete.add_argument("name", metavar="NAME")
        delete.set_defaults(action=_ce_delete)
        _common(delete)
    elif command == "lease":
        listing = add_action("list", "list leases")
        listing.add_argument(
            "--state", action="append", choices=("bound", "released", "expired", "declined"),
            help="only leases in this state (repeat for more)",
        )  # fmt: skip
        listing.set_defaults(action=_lease_list)
        _common(listing)
    elif command == "quarantine":
        listing = add_action("list", "list quarantined clients")
        listing.set_defaults(action=_quarantine_list)
        _common(listing)
        release = add_action("release", "end a client's quarantine")
        release.add_argument("client", metavar="CLIENT", help="the client as listed (hw:... or id:...)")
        release.set_defaults(action=_quarantine_release)
        _common(release)
    else:  # pragma: no cover - COMMANDS and this function change together
        raise ValueError(command)


# == the HTTP client =============================================================================


def _read_private(path: Path, what: str) -> bytes:
    """A file that only its owner may read; its contents are never shown in an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        # A key typed where its file's name belongs is not repeated back.
        shown = "given" if _KEY_SHAPED.fullmatch(path.name) else str(path)
        raise UsageError(f"cannot open the {what} {shown}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"the {what} {path} is not a regular file")
        if mode & 0o077:
            raise UsageError(
                f"the {what} {path} is mode {stat.S_IMODE(mode):04o}; "
                f"it must be readable by its owner only (chmod 600 {path})"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(65536)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> str:
    """The key in a ``--key-file``, normalised to plain hex (validated, never echoed)."""
    text = _read_private(path, "key file").decode("ascii", "replace")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    compact = _HEX_SEPARATORS.sub("", "".join(lines))
    try:
        key = bytes.fromhex(compact)
    except ValueError:
        raise UsageError(f"the key file {path} must hold the key in hexadecimal") from None
    if not key:
        raise UsageError(f"the key file {path} is empty")
    return key.hex()


class Client:
    """Calls the API; raises :class:`ApiCallError` with the API's error message."""

    def __init__(self, base: str, token: str, timeout: float) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--api must be an http:// or https:// URL, not {base!r}")
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            self.base + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status: int = response.status
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiCallError(_error_text(exc.code, exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiCallError(f"cannot reach the API at {self.base}: {reason}") from None
        return status, (json.loads(raw) if raw else None)


def _error_text(status: int, raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        where = f" ({body['field']})" if isinstance(body.get("field"), str) and body["field"] else ""
        return f"{body['error']}{where} [HTTP {status}]"
    return f"HTTP {status}"


def _client(args: argparse.Namespace) -> Client:
    base = args.api or os.environ.get(API_ENV) or DEFAULT_API
    token_path = args.token_file or (Path(os.environ[TOKEN_ENV]) if os.environ.get(TOKEN_ENV) else None)
    if token_path is None:
        raise UsageError(f"no API token: give --token-file or set {TOKEN_ENV}")
    lines = _read_private(token_path, "token file").splitlines()
    token = lines[0].strip().decode("ascii", "replace") if lines else ""
    if not token:
        raise UsageError(f"the token file {token_path} is empty")
    return Client(base, token, args.timeout)


# == output ======================================================================================


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "-"
    return str(value)


def _table(out: IO[str], columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> None:
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (_, title) in enumerate(columns)]
    lines = [[title for _, title in columns], *cells]
    for line in lines:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _emit(args: argparse.Namespace, out: IO[str], body: object, render: Callable[[], object]) -> None:
    if args.json:
        out.write(json.dumps(body, indent=2) + "\n")
    else:
        render()


# == actions =====================================================================================


def _vpn_add(args: argparse.Namespace, out: IO[str]) -> int:
    body = {"id": args.vpn_id, "name": args.name, "vpn_servers": args.servers, "auth": args.auth}
    client = _client(args)
    if args.replace:
        status, vpn = client.call("PUT", f"/v1/vpns/{args.vpn_id}", body)
    else:
        status, vpn = client.call("POST", "/v1/vpns", body)
    _emit(
        args, out, vpn, lambda: out.write(f"VPN {args.vpn_id} {'created' if status == 201 else 'replaced'}\n")
    )
    return 0


def _vpn_list(args: argparse.Namespace, out: IO[str]) -> int:
    _, body = _client(args).call("GET", "/v1/vpns")
    columns = [
        ("id", "ID"),
        ("name", "NAME"),
        ("auth", "AUTH"),
        ("vpn_servers", "SERVERS"),
        ("members", "MEMBERS"),
    ]
    _emit(args, out, body, lambda: _table(out, columns, body["vpns"]))
    return 0


def _vpn_delete(args: argparse.Namespace, out: IO[str]) -> int:
    _client(args).call("DELETE", f"/v1/vpns/{args.vpn_id}")
    _emit(args, out, {"deleted": args.vpn_id}, lambda: out.write(f"VPN {args.vpn_id} deleted\n"))
    return 0


def _ce_add(args: argparse.Namespace, out: IO[str]) -> int:
    if args.key_on_command_line is not None:
        raise UsageError(
            "a key is never taken on the command line (ps and shell history show it): "
            "write it in hex to a file of mode 0600 and give --key-file"
        )
    body: dict[str, object] = {"vpns": args.vpns}
    if args.hw is not None:
        body["hw"] = args.hw
        if args.htype is not None:
            body["htype"] = args.htype
    elif args.htype is not None:
        raise UsageError("--htype only applies with --hw")
    if args.client_id is not None:
        body["client_id"] = args.client_id
    if args.secret_id is not None:
        body["secret_id"] = args.secret_id
    if args.key_file is not None:
        if args.secret_id is None:
            raise UsageError("--key-file needs --secret-id")
        body["key"] = read_key_file(args.key_file)
    if args.static_address is not None:
        body["static_address"] = args.static_address
    status, ce = _client(args).call("PUT", f"/v1/ces/{quote(args.name, safe='')}", body)
    _emit(args, out, ce, lambda: out.write(f"CE {args.name} {'created' if status == 201 else 'updated'}\n"))
    return 0


def _ce_list(args: argparse.Namespace, out: IO[str]) -> int:
    _, body = _client(args).call("GET", "/v1/ces")
    columns = [
        ("name", "NAME"),
        ("client", "CLIENT"),
        ("secret_id", "SECRET ID"),
        ("has_key", "KEY"),
        ("vpns", "VPNS"),
        ("address", "ADDRESS"),
        ("static_address", "STATIC"),
    ]
    _emit(args, out, body, lambda: _table(out, columns, body["ces"]))
    return 0


def _ce_delete(args: argparse.Namespace, out: IO[str]) -> int:
    _client(args).call("DELETE", f"/v1/ces/{quote(args.name, safe='')}")
    _emit(args, out, {"deleted": args.name}, lambda: out.write(f"CE {args.name} deleted\n"))
    return 0


def _lease_list(args: argparse.Namespace, out: IO[str]) -> int:
    query = "".join(f"{'&' if i else '?'}state={s}" for i, s in enumerate(args.state or ()))
    _, body = _client(args).call("GET", f"/v1/leases{query}")
    columns = [
        ("address", "ADDRESS"),
        ("state", "STATE"),
        ("ce", "CE"),
        ("client", "CLIENT"),
        ("expires", "EXPIRES"),
        ("hostname", "HOSTNAME"),
    ]
    _emit(args, out, body, lambda: _table(out, columns, body["leases"]))
    return 0


def _forcerenew(args: argparse.Namespace, out: IO[str]) -> int:
    _, body = _client(args).call("POST", f"/v1/ces/{quote(args.ce, safe='')}/forcerenew")
    _emit(args, out, body, lambda: out.write(f"FORCERENEW to CE {args.ce} scheduled\n"))
    return 0


def _quarantine_list(args: argparse.Namespace, out: IO[str]) -> int:
    _, body = _client(args).call("GET", "/v1/quarantine")
    columns = [("client", "CLIENT"), ("ce", "CE"), ("until", "UNTIL")]
    _emit(args, out, body, lambda: _table(out, columns, body["quarantined"]))
    return 0


def _quarantine_release(args: argparse.Namespace, out: IO[str]) -> int:
    _client(args).call("DELETE", f"/v1/quarantine/{quote(args.client, safe=':')}")
    _emit(args, out, {"released": args.client}, lambda: out.write(f"{args.client} released\n"))
    return 0


def run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], stdin: IO[bytes]) -> int:
    """The ``ce-autoconf`` dispatcher's entry point for every command in :data:`COMMANDS`."""
    action: Callable[[argparse.Namespace, IO[str]], int] = args.action
    try:
        return action(args, stdout)
    except ApiCallError as exc:
        stderr.write(f"ce-autoconf: {exc}\n")
        return 1
