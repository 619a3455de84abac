"""``ce-autoconf server``: run the DHCP server from its TOML configuration.

Follows the subcommand pattern of :mod:`ce_autoconf.cli`: ``add_arguments(parser)`` and
``run(args, stdout, stderr, stdin) -> int``, with :class:`UsageError` for arguments
argparse cannot check. Only ``server run`` lives here; the management subcommands (VPNs,
CEs, leases, FORCERENEW) come with the management API.
"""

from __future__ import annotations

import argparse
import logging
from typing import BinaryIO, TextIO

from dhcp_server.config import ConfigError, RuntimeConfig, load_config
from dhcp_server.driver import DriverConfig, ServerRuntime, run_server

__all__ = ["UsageError", "add_arguments", "run", "runtime_from_config"]


class UsageError(Exception):
    """Arguments that parse but cannot be used."""


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
    serve.add_argument("--check", action="store_true", help="validate the configuration and exit (0: valid)")


def runtime_from_config(config: RuntimeConfig) -> ServerRuntime:
    """The driver's view of a validated configuration."""
    if config.store.backend != "sqlite":
        raise UsageError(f"store backend {config.store.backend!r} is not supported by this server")
    return ServerRuntime(
        server=config.server,
        store_path=config.store.path,
        driver=DriverConfig(
            interfaces=config.listen.interfaces,
            address=str(config.listen.address),
            port=config.listen.port,
        ),
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=stderr)
        return 2
    runtime = runtime_from_config(config)
    if args.check:
        print(f"{args.config}: valid", file=stdout)
        return 0
    logging.basicConfig(level=args.log_level, stream=stderr, format="%(message)s")
    return run_server(runtime)
