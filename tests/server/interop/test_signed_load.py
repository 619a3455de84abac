"""Sustained load with RFC 3118 delayed authentication required: the server process on SQLite,
driven by ``benchmarks/auth_load.py`` (perfdhcp's relay exchange, every REQUEST signed, every
OFFER and ACK checked with the client's key) from a "gen" namespace.

perfdhcp cannot sign, so this is the load test of the authenticated path: every exchange
completes, every reply verifies, no address goes to two clients, and each client's replay
value is durable when its ACK has left (RFC 3118: replay state survives restarts).
"""

from __future__ import annotations

import re
import signal
import sys
from ipaddress import IPv4Network
from pathlib import Path

from auth_load import client_mac, prepare_ces
from netns import Lab, wait_for

from dhcp_server.model import ClientKey, LeaseState
from dhcp_server.sqlite_store import SqliteStore

SERVE = Path(__file__).with_name("serve.py")
AUTH_LOAD = Path(__file__).resolve().parents[3] / "benchmarks" / "auth_load.py"
SERVER, GENERATOR = "10.78.0.1", "10.78.0.2"
CLIENTS = 1500


def test_signed_exchanges_complete_verify_and_persist_replay_state(lab: Lab, tmp_path: Path) -> None:
    srv, gen = lab.namespace("srv"), lab.namespace("gen")
    lab.link(srv, gen, a_address=f"{SERVER}/16", b_address=f"{GENERATOR}/16")
    lab.neighbour(srv, GENERATOR, lab.mac(gen))
    lab.neighbour(gen, SERVER, lab.mac(srv))
    store = tmp_path / "ces.sqlite"
    prepare_ces(store, CLIENTS, IPv4Network("10.78.0.0/16"))
    server = srv.start(
        sys.executable, str(SERVE), "--store", str(store), "--network", "10.78.0.0/16",
        "--pool", "10.78.1.0-10.78.255.254", "--server-id", SERVER, "--auth", "required",
        name="server",
    )  # fmt: skip
    wait_for(lambda: "READY" in server.log() or not server.running(), 30, what="server ready")
    assert server.running(), server.log()

    argv = [sys.executable, str(AUTH_LOAD), SERVER, "--relay", GENERATOR, "--auth"]
    argv += ["--rate", "250", "--seconds", "6", "--clients", str(CLIENTS), "--drop-time", "3"]
    out = gen.run(*argv, timeout=120).stdout
    exchanges = 250 * 6
    assert f"received: {exchanges}/{exchanges}" in out, out  # every OFFER and every ACK came
    assert "replies failing authentication: 0" in out, out
    assert "non unique addresses: 0" in out, out
    assert re.search(r"NAKs \(counted as drops\): 0;", out), out

    server.signal(signal.SIGTERM)
    server.popen.wait(15)
    reopened = SqliteStore(store)
    try:
        snapshot = reopened.load()
    finally:
        reopened.close()
    bound = [lease for lease in snapshot.leases.values() if lease.state is LeaseState.BOUND]
    assert len(bound) == CLIENTS  # 1,500 exchanges over 1,500 clients: one each
    assert len({lease.address for lease in bound}) == CLIENTS
    for i in range(CLIENTS):
        assert ClientKey.from_hardware(1, client_mac(i)) in snapshot.replay
