"""Run our server as a process, configured from the command line: for tests that kill it
(crash safety) and for benchmarks/server_perfdhcp.py.

    python tests/server/interop/serve.py --store S.sqlite --network 10.77.0.0/16 \\
        --pool 10.77.1.0-10.77.255.254 --server-id 10.77.0.1 --auth off

Prints ``READY`` on stdout once port 67 is open. (``ce-autoconf server run --config`` is
the production entry point once the TOML configuration lands; this launcher needs none.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dhcp_server.config import StoreConfig
from dhcp_server.driver import DriverConfig, ServerRuntime, serve
from dhcp_server.model import AuthPolicy, PoolRange, QuarantinePolicy, ServerConfig, SubnetConfig


def parse(argv: list[str]) -> tuple[ServerRuntime, int]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, help="SQLite file (default: in memory)")
    parser.add_argument("--pg-dsn", help="a PostgreSQL store instead (libpq conninfo, no password)")
    parser.add_argument("--network", type=IPv4Network, required=True)
    parser.add_argument("--pool", required=True, help="FIRST-LAST")
    parser.add_argument("--server-id", type=IPv4Address, required=True)
    parser.add_argument("--auth", choices=[p.value for p in AuthPolicy], default="off")
    parser.add_argument("--lease-time", type=int, default=3600)
    parser.add_argument("--interface", action="append", default=[], help="listen only here (repeatable)")
    parser.add_argument("--inline-commit", action="store_true", help="commit on the loop's thread")
    parser.add_argument("--batch-limit", type=int, default=256)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--no-quarantine", action="store_true", help="load generators resend a lot")
    args = parser.parse_args(argv)
    first, _, last = args.pool.partition("-")
    subnet = SubnetConfig(
        network=args.network,
        pools=(PoolRange(IPv4Address(first), IPv4Address(last)),),
        lease_time=args.lease_time,
        auth=AuthPolicy(args.auth),
    )
    quarantine = (
        QuarantinePolicy(max_messages=1 << 30, window=1.0) if args.no_quarantine else QuarantinePolicy()
    )
    runtime = ServerRuntime(
        server=ServerConfig(server_id=args.server_id, subnets=(subnet,), quarantine=quarantine),
        store=(
            StoreConfig("postgresql", dsn=args.pg_dsn)
            if args.pg_dsn
            else None
            if args.store is None
            else StoreConfig("sqlite", args.store)
        ),
        driver=DriverConfig(
            interfaces=tuple(args.interface),
            commit_in_thread=not args.inline_commit,
            batch_limit=args.batch_limit,
        ),
    )
    return runtime, getattr(logging, args.log_level.upper())


def main(argv: list[str]) -> int:
    runtime, level = parse(argv)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        counters = await serve(runtime, stop=stop, on_ready=lambda _d: print("READY", flush=True))
        print(dict(sorted(counters.items())), file=sys.stderr, flush=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
