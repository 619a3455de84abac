"""The default durable store: one SQLite file, written in WAL mode with full fsync.

"An ACK leaves only after its lease is durable": ``commit`` returns once SQLite has
synced the write-ahead log, so the driver may send the replies that waited on it. One
transaction per ``commit`` call lets a batch of leases share one fsync, which is what
keeps durability from costing throughput.

The file holds RFC 3118 keys, so it and its ``-wal``/``-shm`` companions are created
mode 0600 and tightened to it if found wider. Nothing SQLite-specific crosses the
:class:`~dhcp_server.store.Store` interface: errors surface as :class:`StoreError`.

Semantics are those of :meth:`Snapshot.apply`: writes within a batch are folded first
(last write per key wins, replay values and the ceiling keep their maximum), then sent
as one ``executemany`` per kind of row.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final

from dhcp_server.actions import Write
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey, Lease, LeaseState, VpnRecord
from dhcp_server.store import Batch, Snapshot, StoreError

__all__ = ["SCHEMA_VERSION", "SqliteStore", "StoreError"]

#: Replay values are 64-bit unsigned; SQLite integers are signed. Stored shifted down by
#: 2**63 so that SQL ``max()`` still orders them.
_SHIFT: Final = 1 << 63
_CEILING: Final = "replay_ceiling"

#: Each entry upgrades the schema by one version; append, never edit a released one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version VALUES (0)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        # address: the IPv4 address as an integer; hostname as the wire bytes (it may
        # not be UTF-8); expires/updated in Unix seconds.
        """CREATE TABLE leases (
            address INTEGER PRIMARY KEY,
            client BLOB NOT NULL,
            chaddr BLOB NOT NULL,
            expires REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('bound', 'released', 'expired', 'declined')),
            xid INTEGER NOT NULL,
            hostname BLOB,
            nonce BLOB,
            updated REAL NOT NULL
        )""",
        "CREATE TABLE replay (client BLOB PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        """CREATE TABLE vpns (
            vpn_id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            auth TEXT NOT NULL CHECK (auth IN ('required', 'optional', 'off'))
        )""",
        """CREATE TABLE vpn_servers (
            vpn_id INTEGER NOT NULL REFERENCES vpns (vpn_id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            address INTEGER NOT NULL,
            PRIMARY KEY (vpn_id, position)
        ) WITHOUT ROWID""",
        """CREATE TABLE ces (
            name TEXT PRIMARY KEY,
            client BLOB,
            secret_id INTEGER,
            static_address INTEGER
        ) WITHOUT ROWID""",
        # No foreign key to vpns: the store keeps what it is given (Snapshot.apply), and
        # membership rules are the Directory's. A key on ce does keep rows from dangling.
        """CREATE TABLE ce_vpns (
            ce TEXT NOT NULL REFERENCES ces (name) ON DELETE CASCADE,
            vpn_id INTEGER NOT NULL,
            PRIMARY KEY (ce, vpn_id)
        ) WITHOUT ROWID""",
        "CREATE TABLE secrets (secret_id INTEGER PRIMARY KEY, key BLOB NOT NULL)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_LEASE_UPSERT: Final = "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_REPLAY_UPSERT: Final = (
    "INSERT INTO replay VALUES (?, ?) ON CONFLICT (client) DO UPDATE SET value = max(value, excluded.value)"
)
_CEILING_UPSERT: Final = (
    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
)

# umask is per process: serialise the moments it is narrowed.
_UMASK_LOCK: Final = threading.Lock()


def _lease_row(lease: Lease) -> tuple[object, ...]:
    hostname = None if lease.hostname is None else lease.hostname.encode("utf-8", "surrogateescape")
    return (
        int(lease.address),
        lease.client.value,
        lease.chaddr,
        lease.expires,
        lease.state.value,
        lease.xid,
        hostname,
        lease.nonce,
        lease.updated,
    )


def _lease_from_row(row: tuple[object, ...]) -> Lease:
    address, client, chaddr, expires, state, xid, hostname, nonce, updated = row
    # The schema fixes these types; the checks are for mypy and cost nothing measurable.
    assert isinstance(address, int)
    assert isinstance(client, bytes)
    assert isinstance(chaddr, bytes)
    assert isinstance(expires, float)
    assert isinstance(state, str)
    assert isinstance(xid, int)
    assert isinstance(updated, float)
    assert hostname is None or isinstance(hostname, bytes)
    assert nonce is None or isinstance(nonce, bytes)
    return Lease(
        address=IPv4Address(address),
        client=ClientKey(client),
        chaddr=chaddr,
        expires=expires,
        state=LeaseState(state),
        xid=xid,
        hostname=None if hostname is None else hostname.decode("utf-8", "surrogateescape"),
        nonce=nonce,
        updated=updated,
    )


def _restrict(path: Path) -> None:
    """Create ``path`` mode 0600, or drop group/other bits from an existing one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & 0o700)
    finally:
        os.close(fd)


class SqliteStore:
    """:class:`~dhcp_server.store.Store` on one SQLite file.

    Safe to call from one thread at a time (the driver may run ``commit`` in an executor
    so its fsync does not block the event loop); a lock serialises stray concurrent calls.
    """

    __slots__ = ("_conn", "_lock", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open the store: {e}") from e

    def _open(self) -> sqlite3.Connection:
        _restrict(self.path)
        for suffix in ("-wal", "-shm"):
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                _restrict(companion)
        with _UMASK_LOCK:
            old = os.umask(0o077)
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                try:
                    self._configure(conn)
                except BaseException:
                    conn.close()
                    raise
            finally:
                os.umask(old)
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is required")
        conn.execute("PRAGMA synchronous = FULL")  # fsync the WAL on every commit
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")  # a management reader may hold a lock briefly
        with self._transaction(conn):
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0] if exists else 0
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this server's ({SCHEMA_VERSION})"
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def load(self) -> Snapshot:
        """Everything committed so far, read in one transaction."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN")
                try:
                    return self._read(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot read the store: {e}") from e

    @staticmethod
    def _read(conn: sqlite3.Connection) -> Snapshot:
        snap = Snapshot()
        for row in conn.execute("SELECT * FROM leases"):
            lease = _lease_from_row(row)
            snap.leases[lease.address] = lease
        for client, value in conn.execute("SELECT client, value FROM replay"):
            snap.replay[ClientKey(client)] = value + _SHIFT
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (_CEILING,)).fetchone()
        snap.ceiling = 0 if row is None else row[0] + _SHIFT
        servers: defaultdict[int, list[IPv4Address]] = defaultdict(list)
        for vpn_id, address in conn.execute(
            "SELECT vpn_id, address FROM vpn_servers ORDER BY vpn_id, position"
        ):
            servers[vpn_id].append(IPv4Address(address))
        for vpn_id, name, auth in conn.execute("SELECT vpn_id, name, auth FROM vpns"):
            snap.vpns[vpn_id] = VpnRecord(vpn_id, name, tuple(servers[vpn_id]), AuthPolicy(auth))
        members: defaultdict[str, set[int]] = defaultdict(set)
        for ce, vpn_id in conn.execute("SELECT ce, vpn_id FROM ce_vpns"):
            members[ce].add(vpn_id)
        for name, client, secret_id, static in conn.execute(
            "SELECT name, client, secret_id, static_address FROM ces"
        ):
            snap.ces[name] = CeRecord(
                name=name,
                client=None if client is None else ClientKey(client),
                secret_id=secret_id,
                vpns=frozenset(members[name]),
                static_address=None if static is None else IPv4Address(static),
            )
        for secret_id, key in conn.execute("SELECT secret_id, key FROM secrets"):
            snap.secrets[secret_id] = key
        return snap

    def commit(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable in one transaction: all of them or, on error, none."""
        if not writes:
            return
        batch = Batch.fold(writes)
        with self._lock:
            try:
                with self._transaction(self._conn):
                    self._write(self._conn, batch)
            except (sqlite3.Error, OverflowError, UnicodeError) as e:
                raise StoreError(f"{self.path}: commit failed, nothing written: {e}") from e

    @staticmethod
    def _write(conn: sqlite3.Connection, b: Batch) -> None:
        if b.leases:
            conn.executemany(_LEASE_UPSERT, map(_lease_row, b.leases.values()))
        if b.replay:
            conn.executemany(_REPLAY_UPSERT, [(c, v - _SHIFT) for c, v in b.replay.items()])
        if b.ceiling is not None:
            conn.execute(_CEILING_UPSERT, (_CEILING, b.ceiling - _SHIFT))
        if b.vpns:
            conn.executemany(
                "DELETE FROM vpns WHERE vpn_id = ?", [(k,) for k, v in b.vpns.items() if v is None]
            )
            vpns = [v for v in b.vpns.values() if v is not None]
            conn.executemany(
                "INSERT INTO vpns VALUES (?, ?, ?) ON CONFLICT (vpn_id) DO UPDATE "
                "SET name = excluded.name, auth = excluded.auth",
                [(v.vpn_id, v.name, v.auth.value) for v in vpns],
            )
            conn.executemany("DELETE FROM vpn_servers WHERE vpn_id = ?", [(v.vpn_id,) for v in vpns])
            conn.executemany(
                "INSERT INTO vpn_servers VALUES (?, ?, ?)",
                [(v.vpn_id, i, int(a)) for v in vpns for i, a in enumerate(v.vpn_servers)],
            )
        if b.ces:
            conn.executemany("DELETE FROM ces WHERE name = ?", [(k,) for k, v in b.ces.items() if v is None])
            ces = [c for c in b.ces.values() if c is not None]
            conn.executemany(
                "INSERT INTO ces VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "client = excluded.client, secret_id = excluded.secret_id, "
                "static_address = excluded.static_address",
                [
                    (
                        c.name,
                        None if c.client is None else c.client.value,
                        c.secret_id,
                        None if c.static_address is None else int(c.static_address),
                    )
                    for c in ces
                ],
            )
            conn.executemany("DELETE FROM ce_vpns WHERE ce = ?", [(c.name,) for c in ces])
            conn.executemany("INSERT INTO ce_vpns VALUES (?, ?)", [(c.name, v) for c in ces for v in c.vpns])
        if b.secrets:
            conn.executemany(
                "DELETE FROM secrets WHERE secret_id = ?", [(k,) for k, v in b.secrets.items() if v is None]
            )
            conn.executemany(
                "INSERT OR REPLACE INTO secrets VALUES (?, ?)",
                [(k, v) for k, v in b.secrets.items() if v is not None],
            )

    def integrity_check(self) -> list[str]:
        """SQLite's own consistency check: ``["ok"]`` when the file is sound."""
        with self._lock:
            return [row[0] for row in self._conn.execute("PRAGMA integrity_check")]

    def close(self) -> None:
        """Close the connection; the last one out checkpoints the WAL into the main file."""
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"
