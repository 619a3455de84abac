"""``ce-autoconf``: one command, one subcommand per job (``decode``, ``server``, ``client``,
the management commands ``vpn``/``ce``/``lease``/``forcerenew``/``quarantine``, ``demo``).

Each subcommand module supplies ``add_arguments(parser)`` and ``run(args, stdout, stderr,
stdin) -> int`` and raises its own ``UsageError`` for arguments argparse cannot check;
this module only dispatches, so ``main`` stays callable in-process by tests.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from ce_autoconf import __version__, demo
from dhcp_client import cli as client_cli
from dhcp_server import cli as server_cli
from dhcp_server import manage_cli
from options import decode_tool

__all__ = ["build_parser", "main"]

#: What argparse must not quote back in its errors (it quotes unrecognised arguments and
#: bad values): a ``SECRET_ID:HEX_KEY`` lookalike, and any run of 16 or more hex digits, bare
#: or with separators (a key pasted as a stray argument: ``ce add ce-1 0011...ff``).
_KEY_SHAPED = re.compile(
    r"[0-9A-Za-z]+:[0-9A-Fa-f:]{8,}"
    r"|(?:0[xX])?[0-9A-Fa-f]{16,}"
    r"|(?:0[xX])?(?:[0-9A-Fa-f]{1,4}[:\s-]){7,}[0-9A-Fa-f]{1,4}"
)


def _redact(text: str) -> str:
    return _KEY_SHAPED.sub("<redacted>", text)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors never echo anything shaped like a key."""

    def error(self, message: str) -> NoReturn:
        super().error(_redact(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ce-autoconf",
        description="Provision customer-edge routers into IPsec VPNs (DHCP with RFC 3118 authentication).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    decode = commands.add_parser(
        "decode",
        help="print DHCP messages from hex, raw files or pcap/pcapng, verifying RFC 3118 MACs",
        description="Decode DHCP messages and check their RFC 3118 / RFC 6704 authentication.",
    )
    decode_tool.add_arguments(decode)
    decode.set_defaults(handler=decode_tool.run, usage_error=decode_tool.UsageError, subparser=decode)
    server_cli.register(commands)
    client_cli.register(commands)
    for name, help_text in manage_cli.COMMANDS.items():
        command = commands.add_parser(
            name, help=help_text, description=help_text.capitalize() + ".", allow_abbrev=False
        )
        manage_cli.add_arguments(command, name)
        command.set_defaults(handler=manage_cli.run, usage_error=manage_cli.UsageError, subparser=command)
    demo.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ce-autoconf`` with ``argv`` (default: the process's); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            status: int = args.handler(args, sys.stdout, sys.stderr, sys.stdin.buffer)
        except args.usage_error as exc:
            args.subparser.error(str(exc))
    except SystemExit as exc:  # argparse's way of reporting --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep the interpreter's final
        # flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status
