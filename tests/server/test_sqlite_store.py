"""SqliteStore: durability under kill -9, file modes, schema versions (the reference semantics
of Snapshot.apply, shared with PostgreSQL, are in test_store_backends.py)."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dhcp_server.actions import (
    CeDelete,
    CeWrite,
    LeaseWrite,
    SecretWrite,
    VpnWrite,
)
from dhcp_server.model import CeRecord, ClientKey, Lease, VpnRecord
from dhcp_server.sqlite_store import SCHEMA_VERSION, SqliteStore, StoreError

REPO = Path(__file__).resolve().parents[2]


def lease(address: str, **kw: object) -> Lease:
    fields: dict[str, object] = {
        "client": ClientKey.from_hardware(1, bytes.fromhex("020000770032")),
        "chaddr": bytes.fromhex("020000770032"),
        "expires": 1_700_000_000.5,
    }
    fields.update(kw)
    return Lease(IPv4Address(address), **fields)  # type: ignore[arg-type]


def test_hostname_that_is_not_utf8_round_trips(store_path: Path) -> None:
    """A client's host name is kept as the bytes it sent: a commit must not fail on it."""
    name = b"r\xe9seau-\xff".decode("utf-8", "surrogateescape")
    store = SqliteStore(store_path)
    store.commit([LeaseWrite(lease("10.0.0.9", hostname=name))])
    store.close()
    store = SqliteStore(store_path)
    assert store.load().leases[IPv4Address("10.0.0.9")].hostname == name
    store.close()


def test_deleting_a_ce_removes_its_memberships(store_path: Path) -> None:
    store = SqliteStore(store_path)
    store.commit([VpnWrite(VpnRecord(7, "blue")), CeWrite(CeRecord("ce-1", None, None, frozenset({7})))])
    store.commit([CeDelete("ce-1")])
    store.close()
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("SELECT count(*) FROM ce_vpns").fetchone() == (0,)
    conn.close()


@pytest.mark.usefixtures("umask_022")
def test_files_are_private(store_path: Path) -> None:
    """The store holds RFC 3118 keys: the file and its WAL companions are 0600."""
    store = SqliteStore(store_path)
    store.commit([SecretWrite(1, b"k" * 16)])
    for suffix in ("", "-wal", "-shm"):
        path = store_path.with_name(store_path.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    store.close()


def test_a_readable_store_is_tightened(store_path: Path) -> None:
    store_path.touch()
    store_path.chmod(0o644)
    SqliteStore(store_path).close()
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


def test_wal_mode_and_schema_version_are_recorded(store_path: Path) -> None:
    SqliteStore(store_path).close()
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_every_commit_is_synced(store_path: Path) -> None:
    """synchronous=FULL in WAL mode: the log is fsynced before commit returns (kill -9 cannot
    tell; a power cut would)."""
    store = SqliteStore(store_path)
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert store._conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    store.close()


def test_commit_from_a_worker_thread(store_path: Path) -> None:
    """The driver commits in an executor thread so the event loop keeps receiving."""
    store = SqliteStore(store_path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(store.commit, [LeaseWrite(lease("10.0.0.7"))]).result()
    assert IPv4Address("10.0.0.7") in store.load().leases
    store.close()


def test_newer_schema_is_refused(store_path: Path) -> None:
    SqliteStore(store_path).close()
    conn = sqlite3.connect(store_path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer than this server"):
        SqliteStore(store_path)


def test_a_file_that_is_not_a_store_is_refused(store_path: Path) -> None:
    store_path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match=str(store_path)):
        SqliteStore(store_path)


# -- crash safety ----------------------------------------------------------------------------------

LEASES_PER_BATCH = 5
CHILD = textwrap.dedent(
    """
    import itertools, sys
    from ipaddress import IPv4Address
    from dhcp_server.actions import CeilingWrite, LeaseWrite
    from dhcp_server.model import ClientKey, Lease
    from dhcp_server.sqlite_store import SqliteStore

    store = SqliteStore(sys.argv[1])
    per = int(sys.argv[2])
    for n in itertools.count():
        writes = [
            LeaseWrite(Lease(IPv4Address(0x0A000000 + n * per + i), ClientKey(b"hw:%d" % n), b"", 1e9, xid=n))
            for i in range(per)
        ]
        store.commit([*writes, CeilingWrite(n)])
        sys.stdout.write(f"{n}\\n")
        sys.stdout.flush()
    """
)


def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    """A batch reported after commit returned survives kill -9; batches stay whole."""
    rng = random.Random(3118)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in range(4):
        path = tmp_path / f"crash{run}.sqlite"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(LEASES_PER_BATCH)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        target = rng.randint(1, 150)
        for _ in range(target):  # the child keeps committing while we read
            assert child.stdout.readline(), "child died"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reported = [int(line) for line in child.stdout.read().split("\n") if line]
        child.stdout.close()
        acknowledged = target - 1 + len(reported)  # highest batch number printed

        store = SqliteStore(path)
        snap = store.load()
        assert store.integrity_check() == ["ok"]
        store.close()
        by_batch: dict[int, int] = {}
        for lease in snap.leases.values():
            by_batch[lease.xid] = by_batch.get(lease.xid, 0) + 1
        committed = max(by_batch)
        assert committed >= acknowledged, f"run {run}: batch {acknowledged} was acknowledged, lost"
        assert sorted(by_batch) == list(range(committed + 1)), "a gap: some batch vanished"
        assert set(by_batch.values()) == {LEASES_PER_BATCH}, "a batch was cut in half"
        assert snap.ceiling == committed
