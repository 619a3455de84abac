"""The PostgreSQL store (``[store] backend = "postgresql"``), for operators who keep DHCP
state in PostgreSQL as Kea users do. Same contract as the SQLite store; psycopg 3.

Durability: one transaction per :meth:`PostgresStore.commit`, with ``synchronous_commit``
forced on for the session, so ``commit`` returns once the server has flushed the WAL
record (and synchronous standbys confirmed it, if the cluster has any). A cluster running
with ``fsync = off`` is refused at open: it cannot make that promise.

One server per store: two servers handing out leases from one table would each think the
free addresses theirs, and "never two live leases on one address" would be gone. At open
the store takes a session-level advisory lock keyed on its schema and refuses to start if
another session holds it. The lock lives as long as the connection.

Connection loss: ``commit`` raises :class:`StoreError` (the driver then withholds the
batch's ACKs; if the loss hit COMMIT itself the batch may be durable, never half of it).
The next call reconnects: it takes the lock again and checks the owner token this store
wrote at open. If another server opened the store meanwhile, this one's memory no longer
describes the database, and it refuses every later commit until restarted.

The password (``password_file``) is read at each connect, so a rotated password needs no
restart, and is never kept: errors carry libpq's messages, which name host, user and
database, never a password.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from dhcp_server.actions import Write
from dhcp_server.config import FieldError, read_password
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey, Lease, LeaseState, VpnRecord
from dhcp_server.store import Batch, Snapshot, StoreError

__all__ = ["SCHEMA_VERSION", "PostgresStore", "StoreError"]

#: High half of the advisory lock key ("CEAC"); the low half is the schema's OID.
LOCK_CLASS: Final = 0x43454143
#: How long open waits for the lock before refusing (see PostgresStore._try_lock).
LOCK_GRACE: Final = 2.0
_CEILING: Final = "replay_ceiling"
_Conn = psycopg.Connection[tuple[Any, ...]]

#: Each entry upgrades the schema by one version; append, never edit a released one.
#: Addresses are ``inet`` and 64-bit replay values ``numeric(20)``, so operators can query
#: them as they read; host names and keys are ``bytea`` (a host name may not be UTF-8).
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE meta (name text PRIMARY KEY, value numeric(20) NOT NULL)",
        "CREATE TABLE store_owner (token text NOT NULL)",
        """CREATE TABLE leases (
            address inet PRIMARY KEY,
            client bytea NOT NULL,
            chaddr bytea NOT NULL,
            expires double precision NOT NULL,
            state text NOT NULL CHECK (state IN ('bound', 'released', 'expired', 'declined')),
            xid bigint NOT NULL,
            hostname bytea,
            nonce bytea,
            updated double precision NOT NULL
        )""",
        "CREATE TABLE replay (client bytea PRIMARY KEY, value numeric(20) NOT NULL)",
        """CREATE TABLE vpns (
            vpn_id bigint PRIMARY KEY,
            name text NOT NULL,
            auth text NOT NULL CHECK (auth IN ('required', 'optional', 'off'))
        )""",
        """CREATE TABLE vpn_servers (
            vpn_id bigint NOT NULL REFERENCES vpns (vpn_id) ON DELETE CASCADE,
            position integer NOT NULL,
            address inet NOT NULL,
            PRIMARY KEY (vpn_id, position)
        )""",
        "CREATE TABLE ces (name text PRIMARY KEY, client bytea, secret_id bigint, static_address inet)",
        # As in SQLite: no key to vpns (membership rules are the Directory's), one to ces.
        """CREATE TABLE ce_vpns (
            ce text NOT NULL REFERENCES ces (name) ON DELETE CASCADE,
            vpn_id bigint NOT NULL,
            PRIMARY KEY (ce, vpn_id)
        )""",
        "CREATE TABLE secrets (secret_id bigint PRIMARY KEY, key bytea NOT NULL)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_LEASE_UPSERT: Final = (
    "INSERT INTO leases (address, client, chaddr, expires, state, xid, hostname, nonce, updated) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (address) DO UPDATE SET "
    "client = EXCLUDED.client, chaddr = EXCLUDED.chaddr, expires = EXCLUDED.expires, "
    "state = EXCLUDED.state, xid = EXCLUDED.xid, hostname = EXCLUDED.hostname, "
    "nonce = EXCLUDED.nonce, updated = EXCLUDED.updated"
)
_REPLAY_UPSERT: Final = (
    "INSERT INTO replay (client, value) VALUES (%s, %s) "
    "ON CONFLICT (client) DO UPDATE SET value = GREATEST(replay.value, EXCLUDED.value)"
)
_CEILING_UPSERT: Final = (
    "INSERT INTO meta (name, value) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET value = GREATEST(meta.value, EXCLUDED.value)"
)
_VPN_UPSERT: Final = (
    "INSERT INTO vpns (vpn_id, name, auth) VALUES (%s, %s, %s) "
    "ON CONFLICT (vpn_id) DO UPDATE SET name = EXCLUDED.name, auth = EXCLUDED.auth"
)
_CE_UPSERT: Final = (
    "INSERT INTO ces (name, client, secret_id, static_address) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET client = EXCLUDED.client, secret_id = EXCLUDED.secret_id, "
    "static_address = EXCLUDED.static_address"
)
_KEY_UPSERT: Final = (
    "INSERT INTO secrets (secret_id, key) VALUES (%s, %s) "
    "ON CONFLICT (secret_id) DO UPDATE SET key = EXCLUDED.key"
)


def describe(dsn: str) -> str:
    """The DSN's host, port, database and user, for messages (never a password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql (unparsable DSN)"
    shown = " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if k in params)
    return f"postgresql {shown or '(libpq defaults)'}"


def _lease_row(lease: Lease) -> tuple[object, ...]:
    hostname = None if lease.hostname is None else lease.hostname.encode("utf-8", "surrogateescape")
    return (
        lease.address,
        lease.client.value,
        lease.chaddr,
        lease.expires,
        lease.state.value,
        lease.xid,
        hostname,
        lease.nonce,
        lease.updated,
    )


def _address(value: object) -> IPv4Address:
    """psycopg loads a host ``inet`` as an ``IPv4Address``; anything else is not ours."""
    if not isinstance(value, IPv4Address):
        raise StoreError(f"unexpected address in the store: {value!r}")
    return value


def _lease_from_row(row: tuple[Any, ...]) -> Lease:
    address, client, chaddr, expires, state, xid, hostname, nonce, updated = row
    return Lease(
        address=_address(address),
        client=ClientKey(bytes(client)),
        chaddr=bytes(chaddr),
        expires=float(expires),
        state=LeaseState(state),
        xid=int(xid),
        hostname=None if hostname is None else bytes(hostname).decode("utf-8", "surrogateescape"),
        nonce=None if nonce is None else bytes(nonce),
        updated=float(updated),
    )


class PostgresStore:
    """:class:`~dhcp_server.store.Store` on one PostgreSQL schema (the first of the DSN's
    ``search_path``, normally ``public``), created on first use.

    Safe to call from one thread at a time (the driver commits in an executor thread); a
    lock serialises stray concurrent calls. Holds the advisory lock until :meth:`close`.
    """

    __slots__ = ("_conn", "_dsn", "_fenced", "_lock", "_owner", "_password_file", "where")

    def __init__(self, dsn: str, password_file: Path | None = None) -> None:
        self._dsn = dsn
        self._password_file = password_file
        self.where = describe(dsn)
        self._lock = threading.Lock()
        self._owner = secrets.token_hex(16)  # who last opened the store (see _claim)
        self._fenced = False
        self._conn: _Conn | None = None
        self._conn = self._connect(first=True)

    # -- connecting ------------------------------------------------------------------------

    def _connect(self, *, first: bool) -> _Conn:
        extra: dict[str, Any] = {}
        if self._password_file is not None:
            try:
                extra["password"] = read_password(self._password_file)
            except FieldError as e:
                raise StoreError(f"{self.where}: password_file {e.message}") from None
        params = conninfo_to_dict(self._dsn)
        extra.setdefault("connect_timeout", params.get("connect_timeout", 10))
        extra.setdefault("application_name", params.get("application_name", "ce-autoconf dhcp server"))
        try:
            conn: _Conn = psycopg.connect(self._dsn, autocommit=True, **extra)
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: cannot connect: {e}") from None
        del extra
        try:
            self._claim(conn, first=first)
        except BaseException:
            conn.close()
            raise
        return conn

    def _claim(self, conn: _Conn, *, first: bool) -> None:
        """Durable commits, the advisory lock, the schema, and the owner token."""
        try:
            conn.execute("SET synchronous_commit = on")
            fsync = conn.execute("SHOW fsync").fetchone()
            if fsync is None or fsync[0] != "on":
                raise StoreError(
                    f"{self.where}: the server runs with fsync = off; commits would not be durable"
                )
            row = conn.execute(
                "SELECT oid::bigint, nspname FROM pg_namespace WHERE nspname = current_schema()"
            ).fetchone()
            if row is None:
                raise StoreError(
                    f"{self.where}: no schema of the search_path exists to hold the store's tables"
                )
            schema_oid, schema = row
            if not self._try_lock(conn, (LOCK_CLASS << 32) | schema_oid):
                raise StoreError(
                    f"{self.where}: another server holds the store of schema {schema} "
                    f"({self._holder(conn, schema_oid)}); one server per database: two would "
                    "hand out the same addresses"
                )
            with conn.transaction():
                self._migrate(conn, schema)
                if first:
                    conn.execute("DELETE FROM store_owner")
                    conn.execute("INSERT INTO store_owner (token) VALUES (%s)", (self._owner,))
                else:
                    owner = conn.execute("SELECT token FROM store_owner").fetchone()
                    if owner is None or owner[0] != self._owner:
                        self._fenced = True
                        raise StoreError(
                            f"{self.where}: another server opened the store while this one was "
                            "disconnected; this one's state is stale: restart it"
                        )
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: cannot open the store: {e}") from e

    @staticmethod
    def _try_lock(conn: _Conn, key: int) -> bool:
        """The advisory lock, waiting up to :data:`LOCK_GRACE` seconds: a server that just
        stopped or crashed releases it when its backend notices, a moment after it is gone."""
        deadline = time.monotonic() + LOCK_GRACE
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    @staticmethod
    def _holder(conn: _Conn, schema_oid: int) -> str:
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.granted",
            (LOCK_CLASS, schema_oid),
        ).fetchone()
        if row is None:
            return "holder not visible to this role"
        pid, application, client = row
        return f"backend pid {pid}, application {application!r}, client {client or 'local socket'}"

    def _migrate(self, conn: _Conn, schema: str) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.where}: schema {schema} is at version {version}, newer than this server's "
                f"({SCHEMA_VERSION}): upgrade the server, or give it another database"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))

    def _usable(self) -> _Conn:
        """The connection, reconnecting (lock, owner check) if the last one was lost."""
        if self._fenced:
            raise StoreError(f"{self.where}: another server took over the store; restart this one")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
        self._conn = None
        self._conn = self._connect(first=False)
        return self._conn

    # -- the Store interface ---------------------------------------------------------------

    def load(self) -> Snapshot:
        """Everything committed so far, read in one repeatable-read transaction."""
        with self._lock:
            conn = self._usable()
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    return self._read(conn)
            except psycopg.Error as e:
                raise StoreError(f"{self.where}: cannot read the store: {e}") from e

    @staticmethod
    def _read(conn: _Conn) -> Snapshot:
        snap = Snapshot()
        for row in conn.execute(
            "SELECT address, client, chaddr, expires, state, xid, hostname, nonce, updated FROM leases"
        ):
            lease = _lease_from_row(row)
            snap.leases[lease.address] = lease
        for client, value in conn.execute("SELECT client, value FROM replay"):
            snap.replay[ClientKey(bytes(client))] = int(value)
        ceiling = conn.execute("SELECT value FROM meta WHERE name = %s", (_CEILING,)).fetchone()
        snap.ceiling = 0 if ceiling is None else int(ceiling[0])
        servers: defaultdict[int, list[IPv4Address]] = defaultdict(list)
        for vpn_id, address in conn.execute(
            "SELECT vpn_id, address FROM vpn_servers ORDER BY vpn_id, position"
        ):
            servers[vpn_id].append(_address(address))
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
                client=None if client is None else ClientKey(bytes(client)),
                secret_id=secret_id,
                vpns=frozenset(members[name]),
                static_address=None if static is None else _address(static),
            )
        for secret_id, key in conn.execute("SELECT secret_id, key FROM secrets"):
            snap.secrets[secret_id] = bytes(key)
        return snap

    def commit(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable in one transaction: all of them or, on error, none."""
        if not writes:
            return
        batch = Batch.fold(writes)
        with self._lock:
            conn = self._usable()
            try:
                with conn.transaction():
                    self._write(conn, batch)
            except (psycopg.Error, UnicodeError, OverflowError) as e:
                if conn.broken or conn.closed:
                    raise StoreError(
                        f"{self.where}: connection lost during a commit (never half of it is kept; "
                        f"the next call reconnects): {e}"
                    ) from e
                raise StoreError(f"{self.where}: commit failed, nothing written: {e}") from e

    @staticmethod
    def _write(conn: _Conn, b: Batch) -> None:
        cur = conn.cursor()
        if b.leases:
            cur.executemany(_LEASE_UPSERT, [_lease_row(lease) for lease in b.leases.values()])
        if b.replay:
            cur.executemany(_REPLAY_UPSERT, [(c, Decimal(v)) for c, v in b.replay.items()])
        if b.ceiling is not None:
            cur.execute(_CEILING_UPSERT, (_CEILING, Decimal(b.ceiling)))
        if b.vpns:
            deleted = [k for k, v in b.vpns.items() if v is None]
            if deleted:
                cur.execute("DELETE FROM vpns WHERE vpn_id = ANY(%s::bigint[])", (deleted,))
            vpns = [v for v in b.vpns.values() if v is not None]
            if vpns:
                cur.executemany(_VPN_UPSERT, [(v.vpn_id, v.name, v.auth.value) for v in vpns])
                cur.execute(
                    "DELETE FROM vpn_servers WHERE vpn_id = ANY(%s::bigint[])", ([v.vpn_id for v in vpns],)
                )
                servers = [(v.vpn_id, i, a) for v in vpns for i, a in enumerate(v.vpn_servers)]
                if servers:
                    cur.executemany(
                        "INSERT INTO vpn_servers (vpn_id, position, address) VALUES (%s, %s, %s)", servers
                    )
        if b.ces:
            deleted_ces = [k for k, v in b.ces.items() if v is None]
            if deleted_ces:
                cur.execute("DELETE FROM ces WHERE name = ANY(%s::text[])", (deleted_ces,))
            ces = [c for c in b.ces.values() if c is not None]
            if ces:
                cur.executemany(
                    _CE_UPSERT,
                    [
                        (c.name, None if c.client is None else c.client.value, c.secret_id, c.static_address)
                        for c in ces
                    ],
                )
                cur.execute("DELETE FROM ce_vpns WHERE ce = ANY(%s::text[])", ([c.name for c in ces],))
                members = [(c.name, v) for c in ces for v in c.vpns]
                if members:
                    cur.executemany("INSERT INTO ce_vpns (ce, vpn_id) VALUES (%s, %s)", members)
        if b.secrets:
            deleted = [k for k, v in b.secrets.items() if v is None]
            if deleted:
                cur.execute("DELETE FROM secrets WHERE secret_id = ANY(%s::bigint[])", (deleted,))
            kept = [(k, v) for k, v in b.secrets.items() if v is not None]
            if kept:
                cur.executemany(_KEY_UPSERT, kept)

    def close(self) -> None:
        """Release the advisory lock and close the connection. The explicit unlock makes a
        restart deterministic: closing alone lets the backend drop the lock a moment later."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"
