"""Durable commits per second of SqliteStore, for batches of 1, 10 and 100 lease writes.

Usage: .venv/bin/python benchmarks/store.py [--seconds S] [--dir DIR]

Every commit is one transaction synced to disk (WAL, synchronous=FULL), so commits/s is
bounded by the disk's fsync rate and leases/s grows with the batch: that is why the
driver commits the writes of many messages at once. Put ``--dir`` on the disk the server
will use; tmpfs would measure nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from dhcp_server.actions import LeaseWrite, Write
from dhcp_server.model import ClientKey, Lease
from dhcp_server.sqlite_store import SqliteStore


def batch(start: int, size: int) -> list[Write]:
    return [
        LeaseWrite(
            Lease(
                IPv4Address(0x0A000000 + (start + i) % 0xFFFFFF),
                ClientKey.from_hardware(1, (start + i).to_bytes(6, "big")),
                (start + i).to_bytes(6, "big"),
                expires=1e9 + start,
                xid=start & 0xFFFFFFFF,
                hostname=f"ce-{start + i}",
                nonce=bytes(16),
                updated=1e9,
            )
        )
        for i in range(size)
    ]


def measure(store: SqliteStore, size: int, seconds: float) -> tuple[float, float]:
    """Commits/s and leases/s over ``seconds``, batches prepared outside the timing."""
    prepared = [batch(n * size, size) for n in range(64)]
    commits = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        store.commit(prepared[commits % len(prepared)])
        commits += 1
    return commits / elapsed, commits * size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = SqliteStore(Path(tmp) / "bench.sqlite")
        print(f"{'batch':>6} {'commits/s':>10} {'leases/s':>10}")
        for size in (1, 10, 100):
            commits, leases = measure(store, size, args.seconds)
            print(f"{size:>6} {commits:>10.0f} {leases:>10.0f}")
        store.close()


if __name__ == "__main__":
    main()
