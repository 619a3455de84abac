"""A throwaway PostgreSQL cluster for the PostgreSQL store's tests (a pytest plugin).

``initdb`` and ``pg_ctl start`` in a fresh temporary directory, listening only on a unix
socket in that directory (no TCP port is opened, so nothing clashes with a system
cluster), as the ``postgres`` user when the tests run as root (PostgreSQL refuses root).
One cluster per test session (per xdist worker): starting one costs seconds, a database
costs a fraction of one. It is stopped and removed however the tests end.

Local connections are trusted, except for the role :data:`PASSWORD_ROLE`, which must give
its password (scram-sha-256): the tests of ``password_file`` use it. Without the binaries
(Debian: ``postgresql-15``) the tests that need a cluster skip, and FAIL under ``CI=true``.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import psycopg
import pytest
from netns import missing
from psycopg import sql

__all__ = ["PASSWORD", "PASSWORD_ROLE", "Cluster", "postgres"]

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A running cluster for the whole session; stopped and removed even when tests fail."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not (initdb.exists() and pg_ctl.exists()):
        missing(f"PostgreSQL server binaries are not in {PG_BIN} (Debian: postgresql-15)")
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no postgres user to run PostgreSQL as")
    directory = Path(tempfile.mkdtemp(prefix="cea-pg-"))
    cluster = Cluster(directory, random.randint(20000, 29999))
    data = directory / "data"
    started = False
    try:
        directory.chmod(0o755)  # clients of any user reach the socket
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            _as_owner([str(initdb), "-D", str(data), "-U", "postgres", "--auth-local=trust"], owner),
            check=True,
            capture_output=True,
        )
        hba = data / "pg_hba.conf"
        hba.write_text(_HBA)
        options = (
            f"-c listen_addresses='' -k {directory} -p {cluster.port} "
            "-c shared_buffers=16MB -c max_connections=40 -c fsync=on -c synchronous_commit=on"
        )
        start = [str(pg_ctl), "start", "-w", "-t", "60", "-D", str(data), "-l", str(directory / "log")]
        subprocess.run(
            _as_owner([*start, "-o", options], owner),
            check=True,
            capture_output=True,
        )
        started = True
        with cluster.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD)
                )
            )
        yield cluster
    except subprocess.CalledProcessError as e:
        pytest.fail(f"the test cluster did not start: {e.stderr!r}\n{cluster.log()[-2000:]}")
    finally:
        if started:
            subprocess.run(
                _as_owner([str(pg_ctl), "stop", "-w", "-m", "immediate", "-D", str(data)], owner),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(directory, ignore_errors=True)
