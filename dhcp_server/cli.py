"""``ce-autoconf server``: run the DHCP server from its TOML configuration.

Follows the subcommand pattern of :mod:`ce_autoconf.cli`: ``add_arguments(parser)`` and
``run(args, stdout, stderr, stdin) -> int``, with :class:`UsageError` for arguments
argparse cannot check; :func:`register` adds it to the dispatcher. What ``server run``
starts, and in which order, is :mod:`dhcp_server.service`. The management subcommands
(VPNs, CEs, leases, FORCERENEW) are :mod:`dhcp_server.manage_cli`.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
from typing import Any, BinaryIO, TextIO

from dhcp_server import service
from dhcp_server.api import TokenFileError
from dhcp_server.config import ConfigError, RuntimeConfig, load_config
from dhcp_server.driver import DriverConfig, ServerRuntime
from dhcp_server.logs import install_json_logging, log_event
from dhcp_server.store import StoreError

__all__ = ["UsageError", "add_arguments", "register", "run", "runtime_from_config"]

log = logging.getLogger("dhcp_server.cli")


class UsageError(Exception):
    """Arguments that parse but cannot be used."""


def register(commands: Any) -> None:
    """Add ``server`` to the ``ce-autoconf`` dispatcher (``commands`` is its subparsers object)."""
    parser = commands.add_parser(
        "server",
        help="run the DHCP server (RFC 3118, DHCPINFORM VPN data, FORCERENEW) and its management API",
        description="Run the ce-autoconf DHCP server from its TOML configuration.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run, usage_error=UsageError, subparser=parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="server_action", metavar="ACTION", required=True)
    serve = actions.add_parser("run", help="serve DHCP on port 67 until SIGTERM/SIGINT")
    serve.add_argument("--config", "-c", required=True, help="the server's TOML configuration")
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="INFO logs one JSON line per event (lease bound, drop, FORCERENEW ...)",
    )
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration, the secrets file and the API token file, and exit (0: valid)",
    )


def runtime_from_config(config: RuntimeConfig) -> ServerRuntime:
    """The driver's view of a validated configuration."""
    return ServerRuntime(
        server=config.server,
        store=config.store,
        driver=DriverConfig(
            interfaces=config.listen.interfaces,
            address=str(config.listen.address),
            port=config.listen.port,
        ),
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    """Exit status: 0 stopped by a signal (or ``--check`` passed), 2 the configuration, the
    secrets file or the token file is unusable, 1 the server could not start or failed."""
    try:
        config = load_config(args.config)
        service.check(config)
    except (ConfigError, TokenFileError) as e:
        print(e, file=stderr)
        return 2
    if args.check:
        print(f"{args.config}: valid", file=stdout)
        return 0
    root = logging.getLogger()
    handler = install_json_logging(stderr, getattr(logging, args.log_level))
    try:
        service.run(config)
    except (ConfigError, TokenFileError) as e:  # a file changed between the check and the start
        print(e, file=stderr)
        return 2
    except (OSError, sqlite3.Error, StoreError) as e:  # StoreError messages never hold a password
        log_event(log, "server.failed", logging.ERROR, error=str(e))
        return 1
    finally:
        root.removeHandler(handler)
    return 0
