"""``ce-autoconf server run`` with the PostgreSQL store serves busybox udhcpc, refuses a second
server on the same database, and keeps the lease across a restart (the renewal after it is
ACKed: a server that had lost the binding would NAK it)."""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import psycopg
from netns import Process, wait_for
from pg_cluster import PASSWORD, PASSWORD_ROLE, Cluster

from .conftest import POOL, SERVER, ServerLab
from .test_udhcpc import SCRIPT

CONFIG = """\
[server]
server_id = "{server}"

[[subnets]]
network = "10.77.0.0/24"
interface = "eth0"
pools = ["{first}-{last}"]
auth = "off"  # udhcpc has no RFC 3118

[store]
backend = "postgresql"
dsn = "{dsn}"
password_file = "pg.password"
"""


def test_server_run_with_the_postgresql_store_survives_a_restart(
    server_lab: ServerLab, require_tools: Callable[..., dict[str, str]], postgres: Cluster, tmp_path: Path
) -> None:
    tools = require_tools("busybox")
    dbname = postgres.create_database(owner=PASSWORD_ROLE)
    password_file = tmp_path / "pg.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    config = tmp_path / "server.toml"
    dsn = postgres.dsn(dbname, user=PASSWORD_ROLE)
    config.write_text(CONFIG.format(server=SERVER, first=POOL.first, last=POOL.last, dsn=dsn))
    command = (sys.executable, "-m", "ce_autoconf", "server", "run", "--config", str(config))

    def start_server() -> Process:
        server = server_lab.server_ns.start(*command, name="server")
        wait_for(lambda: '"server.ready"' in server.log() or not server.running(), 30, what="server.ready")
        assert server.running(), server.log()
        return server

    def leases() -> list[tuple[object, ...]]:
        with psycopg.connect(postgres.dsn(dbname)) as conn:
            return conn.execute("SELECT address, state, updated FROM leases").fetchall()

    events = tmp_path / "udhcpc-events.log"
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT.format(log=events))
    script.chmod(0o755)

    def logged(pattern: str, after: int = 0) -> re.Match[str] | None:
        return re.search(pattern, events.read_text()[after:]) if events.exists() else None

    server = start_server()
    udhcpc = server_lab.client_ns.start(
        tools["busybox"], "udhcpc", "-f", "-i", "eth0", "-s", str(script), "-t", "5", "-T", "1", "-A", "1",
        name="udhcpc",
    )  # fmt: skip
    bound = wait_for(lambda: logged(r"bound ip=(\S+)"), 30, what="udhcpc bound")
    address = IPv4Address(bound.group(1))
    assert address in POOL
    [(stored, state, first_update)] = leases()
    assert (stored, state) == (address, "bound")

    # A second server on the same database stops before it listens, saying why.
    second = server_lab.server_ns.run(*command, check=False, timeout=60)
    assert second.returncode == 1, second.stderr
    failed = json.loads(second.stderr.strip().splitlines()[-1])
    assert failed["event"] == "server.failed"
    assert "another server holds the store" in failed["fields"]["error"]

    server.signal(signal.SIGTERM)
    wait_for(lambda: not server.running(), 15, what="the server to stop on SIGTERM")
    assert server.popen.returncode == 0, server.log()
    server = start_server()  # loads the lease from PostgreSQL
    seen = len(events.read_text())
    udhcpc.signal(signal.SIGUSR1)  # renew: a unicast REQUEST the restarted server must know
    wait_for(lambda: logged(r"renew ip=" + re.escape(str(address)), seen), 30, what="renewed after restart")
    assert logged(r"nak|deconfig", seen) is None
    [(stored, state, renewed)] = leases()
    assert (stored, state) == (address, "bound") and renewed > first_update  # type: ignore[operator]
    udhcpc.stop()
    server.stop()
    for text in (server.log(), second.stdout, second.stderr):
        assert PASSWORD not in text
