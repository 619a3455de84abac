"""A throwaway PostgreSQL cluster for the PostgreSQL store's tests (a pytest plugin).

``initdb`` and ``pg_ctl start`` in a fresh temporary directory, listening only on a unix
socket in that directory (no TCP port is opened, so nothing clashes with a system
cluster), as the ``postgres`` user when the tests run as root (PostgreSQL refuses root).
One cluster per test session (per xdist worker): starting one costs seconds, a database
costs a fraction of one. It is stopped and removed however the tests end.

Local connections are trusted, except for the role :data:`PASSWORD_ROLE`, which must give
its password (scram-sha-256): the tests of ``password_file`` use it. Without the binaries
(Debian: ``postgresql-15``) the tests that need a cluster skip, and FAIL under ``CI=true``.
:func:`running_cluster` serves benchmarks/server_perfdhcp.py ``--store postgresql`` too.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import psycopg
import pytest
from netns import missing
from psycopg import sql

__all__ = ["PASSWORD", "PASSWORD_ROLE", "Cluster", "postgres", "running_cluster", "unavailable_reason"]

PG_BIN = Path(os.environ.get("CEA_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD_ROLE = "dhcp_pw"
PASSWORD = "pw-Zq8-never-logged"
_HBA = f"local all {PASSWORD_ROLE} scram-sha-256\nlocal all all trust\n"
_databases = count()


@dataclass(frozen=True, slots=True)
class Cluster:
    directory: Path  # the socket directory; data/ and log below it
    port: int

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.directory} port={self.port} dbname={dbname} user={user}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def create_database(self, owner: str = "postgres") -> str:
        """A new empty database, named uniquely in this session; returns its name."""
        name = f"t{os.getpid()}_{next(_databases)}"
        with self.admin() as conn:
            statement = sql.SQL("CREATE DATABASE {} OWNER {}")
            conn.execute(statement.format(sql.Identifier(name), sql.Identifier(owner)))
        return name

    def log(self) -> str:
        try:
            return (self.directory / "log").read_text(errors="replace")
        except OSError:
            return ""


def _as_owner(argv: list[str], owner: pwd.struct_passwd | None) -> list[str]:
    return argv if owner is None else ["runuser", "-u", owner.pw_name, "--", *argv]


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    if not ((PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()):
        return f"PostgreSQL server binaries are not in {PG_BIN} (Debian: postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


@contextmanager
def running_cluster(settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """initdb + pg_ctl start in a new temporary directory (``settings``: extra ``-c`` options);
    stopped and removed on exit, however the body ends. Raises RuntimeError if it cannot start."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="cea-pg-"))
    cluster = Cluster(directory, random.randint(20000, 29999))
    data = directory / "data"
    started = False
    try:
        directory.chmod(0o755)  # clients of any user reach the socket
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": str(directory),
            "port": str(cluster.port),
            "shared_buffers": "16MB",
            "max_connections": "40",
            "fsync": "on",
            "synchronous_commit": "on",
            **(settings or {}),
        }
        try:
            subprocess.run(
                _as_owner([str(initdb), "-D", str(data), "-U", "postgres", "--auth-local=trust"], owner),
                check=True,
                capture_output=True,
            )
            (data / "pg_hba.conf").write_text(_HBA)
            start = [str(pg_ctl), "start", "-w", "-t", "60", "-D", str(data), "-l", str(directory / "log")]
            flags = " ".join(f"-c {k}={v}" for k, v in options.items())
            subprocess.run(_as_owner([*start, "-o", flags], owner), check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"the PostgreSQL cluster did not start: {e.stderr!r}\n{cluster.log()[-2000:]}"
            ) from e
        started = True
        with cluster.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD)
                )
            )
        yield cluster
    finally:
        if started:
            subprocess.run(
                _as_owner([str(pg_ctl), "stop", "-w", "-m", "immediate", "-D", str(data)], owner),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A running cluster for the whole session; stopped and removed even when tests fail."""
    reason = unavailable_reason()
    if reason is not None:
        missing(reason)
    with running_cluster() as cluster:
        yield cluster
