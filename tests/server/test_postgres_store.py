"""PostgresStore against a real PostgreSQL (pg_cluster.py): one server per database, schema
versions, a connection killed in the middle of a commit, durability settings, passwords.

The reference semantics (the hypothesis property) are shared with SQLite in
test_store_backends.py.
"""

from __future__ import annotations

import concurrent.futures
import time
import traceback
from ipaddress import IPv4Address
from pathlib import Path

import psycopg
import pytest
from pg_cluster import PASSWORD, PASSWORD_ROLE, Cluster

from dhcp_server.actions import CeilingWrite, LeaseWrite, SecretWrite, VpnWrite, Write
from dhcp_server.config import ConfigError, parse_config
from dhcp_server.model import ClientKey, Lease, VpnRecord
from dhcp_server.postgres_store import SCHEMA_VERSION, PostgresStore
from dhcp_server.store import StoreError


def _lease(address: str, xid: int = 0) -> Lease:
    mac = bytes.fromhex("020000770032")
    return Lease(IPv4Address(address), ClientKey.from_hardware(1, mac), mac, 1_700_000_000.5, xid=xid)


@pytest.fixture
def dsn(postgres: Cluster) -> str:
    return postgres.dsn(postgres.create_database())


def test_a_second_server_on_the_same_database_is_refused(dsn: str) -> None:
    first = PostgresStore(dsn)
    try:
        with pytest.raises(StoreError, match="another server holds the store") as refused:
            PostgresStore(dsn)
        assert "application 'ce-autoconf dhcp server'" in str(refused.value)
    finally:
        first.close()
    second = PostgresStore(dsn)  # the lock went with the first one's connection
    second.close()


def test_a_newer_schema_version_is_refused(postgres: Cluster, dsn: str) -> None:
    PostgresStore(dsn).close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}, newer than this server"):
        PostgresStore(dsn)


def test_opening_twice_keeps_the_data_and_one_schema_version_row(dsn: str) -> None:
    store = PostgresStore(dsn)
    store.commit([LeaseWrite(_lease("10.0.0.1"))])
    store.close()
    store = PostgresStore(dsn)
    assert list(store.load().leases) == [IPv4Address("10.0.0.1")]
    store.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


def test_commits_are_synchronous_even_if_the_role_says_otherwise(postgres: Cluster, dsn: str) -> None:
    """A role or database default of synchronous_commit = off must not weaken "durable on return"."""
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    with postgres.admin() as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    store = PostgresStore(dsn)
    try:
        assert store._conn is not None
        assert store._conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        store.close()


def _wait_for_lock_wait(admin: psycopg.Connection[tuple[object, ...]], pid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row == ("Lock",):
            return
        time.sleep(0.02)
    raise AssertionError("the commit never blocked on the table lock")


def test_a_commit_whose_connection_is_killed_raises_and_keeps_nothing(postgres: Cluster, dsn: str) -> None:
    """pg_terminate_backend while the commit is half done (leases written, secrets blocked):
    the commit raises, none of it is in the database, and the next commit reconnects."""
    store = PostgresStore(dsn)
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    try:
        store.commit([LeaseWrite(_lease("10.0.0.1"))])
        assert store._conn is not None
        pid = store._conn.info.backend_pid
        batch: list[Write] = [
            LeaseWrite(_lease("10.0.0.2")),
            CeilingWrite(9),
            SecretWrite(5, b"k" * 16),  # written last: blocks on the lock below
        ]
        with postgres.admin(dbname) as blocker, postgres.admin() as killer, blocker.transaction():
            blocker.execute("LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pending = pool.submit(store.commit, batch)
                _wait_for_lock_wait(killer, pid)
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
                with pytest.raises(StoreError, match="connection lost during a commit"):
                    pending.result(timeout=30)
        snap = store.load()  # a new connection
        assert list(snap.leases) == [IPv4Address("10.0.0.1")]
        assert (snap.ceiling, snap.secrets) == (0, {})
        assert store._conn is not None and store._conn.info.backend_pid != pid
        store.commit(batch)
        assert set(store.load().leases) == {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")}
    finally:
        store.close()


def test_after_losing_its_connection_a_server_yields_to_one_that_opened_meanwhile(
    postgres: Cluster, dsn: str
) -> None:
    """The lock went with the connection; if another server opened the store in between, this
    one's memory is stale and it must not commit again (the owner token tells)."""
    store = PostgresStore(dsn)
    try:
        assert store._conn is not None
        pid = store._conn.info.backend_pid
        with postgres.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        other = PostgresStore(dsn)
        other.commit([LeaseWrite(_lease("10.0.0.7"))])
        with pytest.raises(StoreError, match="connection lost"):  # found out by using it
            store.commit([LeaseWrite(_lease("10.0.0.7", xid=1))])
        with pytest.raises(StoreError, match="another server holds the store"):
            store.commit([LeaseWrite(_lease("10.0.0.7", xid=1))])  # the other still runs
        other.close()
        with pytest.raises(StoreError, match="restart"):
            store.commit([LeaseWrite(_lease("10.0.0.7", xid=1))])  # it stopped: still stale
        with pytest.raises(StoreError, match="restart"):
            store.load()
    finally:
        store.close()
    reopened = PostgresStore(dsn)  # a restarted server reads what the other one left
    assert reopened.load().leases[IPv4Address("10.0.0.7")].xid == 0
    reopened.close()


def test_a_name_postgresql_text_cannot_hold_is_refused_whole(dsn: str) -> None:
    """U+0000 (which the API refuses anyway) cannot be stored in text: the batch fails whole."""
    store = PostgresStore(dsn)
    try:
        with pytest.raises(StoreError, match="nothing written"):
            store.commit([LeaseWrite(_lease("10.0.0.1")), VpnWrite(VpnRecord(7, "nul\x00"))])
        assert store.load().leases == {}
    finally:
        store.close()


def test_a_wrong_password_fails_without_showing_it(postgres: Cluster, tmp_path: Path) -> None:
    dbname = postgres.create_database(owner=PASSWORD_ROLE)
    dsn = postgres.dsn(dbname, user=PASSWORD_ROLE)
    password_file = tmp_path / "pg.password"
    wrong = "wrong-" + PASSWORD[::-1]
    password_file.write_text(wrong + "\n")
    password_file.chmod(0o600)
    with pytest.raises(StoreError) as failed:
        PostgresStore(dsn, password_file)
    shown = "".join(traceback.format_exception(failed.value))
    assert "password authentication failed" in shown
    assert wrong not in shown
    assert PASSWORD[::-1] not in shown

    password_file.write_text(PASSWORD + "\n")
    store = PostgresStore(dsn, password_file)
    try:
        store.commit([LeaseWrite(_lease("10.0.0.3"))])
        assert PASSWORD not in repr(store)
        assert list(store.load().leases) == [IPv4Address("10.0.0.3")]
    finally:
        store.close()


def test_the_configuration_checks_the_password_file_and_never_holds_the_password(
    postgres: Cluster, tmp_path: Path
) -> None:
    password_file = tmp_path / "pg.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o644)
    text = (
        '[server]\nserver_id = "10.66.0.1"\n\n[[subnets]]\nnetwork = "10.66.0.0/24"\n'
        'interface = "eth0"\npools = ["10.66.0.100-10.66.0.199"]\n\n'
        f'[store]\nbackend = "postgresql"\ndsn = "{postgres.dsn(user=PASSWORD_ROLE)}"\n'
        'password_file = "pg.password"\n'
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "server.toml", base=tmp_path)
    assert str(refused.value) == (
        f"server.toml:12: store.password_file: {password_file} has mode 0644; secret files must be "
        f"0600 or stricter (chmod 600 {password_file})"
    )
    password_file.chmod(0o600)
    config = parse_config(text, "server.toml", base=tmp_path)
    assert config.store.password_file == password_file
    assert PASSWORD not in repr(config)
    with pytest.raises(ConfigError, match=r"server\.toml:11: store\.dsn: must not contain the password"):
        parse_config(text.replace('dsn = "', 'dsn = "password=x '), "server.toml", base=tmp_path)
    leaked = "s3cret-in-the-dsn"
    with pytest.raises(ConfigError) as refused:
        parse_config(
            text.replace(
                f'dsn = "{postgres.dsn(user=PASSWORD_ROLE)}"', f'dsn = "postgresql://u:{leaked}@h/d"'
            ),
            "server.toml",
            base=tmp_path,
        )
    assert "must not contain the password" in str(refused.value)
    assert leaked not in str(refused.value)
