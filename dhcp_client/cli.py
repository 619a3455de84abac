"""``ce-autoconf client``: run the client on an interface; ``ce-autoconf client status``.

``ce-autoconf client --config client.toml`` runs until SIGINT/SIGTERM (``--release`` sends
a DHCPRELEASE on the way out) and logs every event as one JSON line on stdout.
``ce-autoconf client status --state FILE`` prints the remembered lease and peers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from dhcp_client.driver import ClientDriver, open_client_socket
from dhcp_client.events import ClientEvent, event_to_json
from dhcp_client.iface import InterfaceConfigurator
from dhcp_client.machine import ClientMachine
from dhcp_client.persistence import ClientState, FileStateStore
from dhcp_client.settings import ClientSettings, SettingsError, load_settings

if TYPE_CHECKING:
    from ce_runtime.node import NodeSettings

__all__ = ["UsageError", "add_arguments", "register", "run"]


class UsageError(ValueError):
    """A bad command line or configuration; the message never contains key material."""


def register(commands: Any) -> None:
    """Add ``client`` to the ``ce-autoconf`` dispatcher (``commands`` is its subparsers object)."""
    parser = commands.add_parser(
        "client",
        help="run the CE DHCP client on an interface (RFC 3118, FORCERENEW, VPN peers by INFORM)",
        description="Run the CE DHCP client, or show what it remembers (status).",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run, usage_error=UsageError, subparser=parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration (examples/client.toml)"
    )
    parser.add_argument("--release", action="store_true", help="send DHCPRELEASE when stopping")
    parser.add_argument(
        "--runtime",
        type=Path,
        metavar="FILE",
        help="also run the tunnel runtime on the client's events (examples/runtime.toml, docs/runtime.md)",
    )
    sub = parser.add_subparsers(dest="client_command", metavar="status")
    status = sub.add_parser("status", help="print the remembered lease and VPN peers")
    status.add_argument("--state", type=Path, required=True, metavar="FILE", help="the client's state file")
    status.add_argument("--json", action="store_true", help="one JSON object")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    if args.client_command == "status":
        return status(args.state, stdout, as_json=args.json)
    if args.config is None:
        raise UsageError("give --config FILE (or the status command)")
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    runtime = None
    if args.runtime is not None:
        from ce_runtime.node import NodeError, load_node_settings  # noqa: PLC0415 - optional part

        try:
            runtime = load_node_settings(args.runtime)
        except NodeError as exc:
            raise UsageError(str(exc)) from None
    return asyncio.run(serve(settings, stdout, release=args.release, runtime=runtime))


def status(path: Path, stdout: TextIO, *, as_json: bool) -> int:
    try:
        state = FileStateStore(path).load()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if state is None:
        raise UsageError(f"{path}: no such state file")
    if as_json:
        out = state.to_json()
        out.pop("nonce", None)  # key material of RFC 6704
        stdout.write(json.dumps(out, sort_keys=True) + "\n")
        return 0
    stdout.write(_status_text(state, time.time()))
    return 0


def _status_text(state: ClientState, now: float) -> str:
    lines = []
    lease = state.lease
    if lease is None:
        lines.append("lease: none")
    else:
        left = lease.expires_at - now
        when = "infinite" if lease.infinite else (f"expires in {left:.0f} s" if left > 0 else "expired")
        prefix = f"/{lease.prefix_length}" if lease.prefix_length is not None else ""
        lines.append(f"lease: {lease.address}{prefix} from {lease.server_id}, {when}")
        if lease.routers:
            lines.append(f"routers: {', '.join(map(str, lease.routers))}")
    lines.append(
        f"authentication: replay floor {state.server_replay}"
        if state.server_replay
        else "authentication: none"
    )
    if state.vpn_servers:
        lines.append(f"VPN servers: {', '.join(map(str, state.vpn_servers))}")
    if not state.peers:
        lines.append("VPNs: none")
    for vpn_id, peers in sorted(state.peers.items()):
        listed = ", ".join(str(p) for p in sorted(peers)) or "(no peers)"
        lines.append(f"VPN {vpn_id}: {listed}")
    return "\n".join(lines) + "\n"


async def serve(
    settings: ClientSettings, stdout: TextIO, *, release: bool = False, runtime: NodeSettings | None = None
) -> int:
    """Run the client until SIGINT/SIGTERM; events as JSON lines. With ``runtime``, the tunnel
    runtime (:mod:`ce_runtime.node`) runs alongside on the same events and logs its own."""
    machine = ClientMachine(settings.client, FileStateStore(settings.state_file), random.SystemRandom())
    configurator = (
        InterfaceConfigurator(settings.interface, default_route=settings.default_route)
        if settings.apply_address
        else None
    )

    def emit(record: dict[str, Any]) -> None:
        stdout.write(
            json.dumps({"time": round(time.time(), 3), "interface": settings.interface, **record}) + "\n"
        )
        stdout.flush()

    node = None
    if runtime is not None:
        from ce_runtime.node import build_node  # noqa: PLC0415 - netlink only with --runtime

        node = build_node(runtime, emit)
        remembered = FileStateStore(settings.state_file).load()  # the machine loads it too
        node.seed(remembered.lease if remembered else None, remembered.peers if remembered else {})

    def on_event(event: ClientEvent) -> None:
        if configurator is not None:
            configurator(event)
        emit(event_to_json(event))
        if node is not None:
            node.on_event(event)

    driver = ClientDriver(machine, open_client_socket(settings.interface), on_event)
    loop = asyncio.get_running_loop()
    stop = driver.release if release else driver.stop
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    node_task = None if node is None else asyncio.create_task(node.run())
    try:
        await driver.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if node is not None and node_task is not None:
            node.stop()
            await node_task
            node.close()
    counters = dict(sorted(machine.counters.items()))
    stdout.write(json.dumps({"time": round(time.time(), 3), "event": "Stopped", "counters": counters}) + "\n")
    return 0
