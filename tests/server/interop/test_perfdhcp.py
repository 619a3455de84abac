"""ISC perfdhcp (Kea 2.2) drives our server, started as its own process on a SQLite store.

perfdhcp acts as a relay (giaddr = its address, replies unicast to giaddr:67), in a
"gen" namespace linked to the server's "srv" namespace; static neighbour entries both ways
so nothing ARPs during a run (/work/shared/notes/benchmarks.md). ``-g single`` always.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from netns import Lab, Namespace, Process, wait_for

from dhcp_server.model import LeaseState
from dhcp_server.sqlite_store import SqliteStore
from options import MessageType, decode_message
from options.pcap import read_capture

SERVE = Path(__file__).with_name("serve.py")
SERVER = "10.77.0.1"
GENERATOR = "10.77.0.2"


@dataclass
class RelayLab:
    lab: Lab
    srv: Namespace
    gen: Namespace
    store: Path
    perfdhcp: str

    def start_server(self, *extra: str) -> Process:
        server = self.srv.start(
            sys.executable,
            str(SERVE),
            "--store",
            str(self.store),
            "--network",
            "10.77.0.0/16",
            "--pool",
            "10.77.1.0-10.77.255.254",
            "--server-id",
            SERVER,
            "--auth",
            "off",
            "--no-quarantine",
            *extra,
            name="server",
        )
        wait_for(lambda: "READY" in server.log() or not server.running(), 20, what="server ready")
        assert server.running(), server.log()
        return server

    def perfdhcp_argv(self, rate: int, seconds: int, seed: int) -> list[str]:
        return [
            self.perfdhcp,
            "-4",
            "-g",
            "single",
            "-l",
            GENERATOR,
            "-r",
            str(rate),
            "-R",
            "50000",
            "-p",
            str(seconds),
            "-W",
            "1000000",
            "-s",
            str(seed),
            "-t",
            str(seconds),
            SERVER,
        ]


@pytest.fixture
def relay_lab(lab: Lab, require_tools: Callable[..., dict[str, str]], tmp_path: Path) -> RelayLab:
    tools = require_tools("perfdhcp", "tcpdump")
    srv = lab.namespace("srv")
    gen = lab.namespace("gen")
    lab.link(srv, gen, a_address=f"{SERVER}/16", b_address=f"{GENERATOR}/16")
    lab.neighbour(srv, GENERATOR, lab.mac(gen))
    lab.neighbour(gen, SERVER, lab.mac(srv))
    return RelayLab(lab, srv, gen, tmp_path / "leases.sqlite", tools["perfdhcp"])


def section(output: str, name: str) -> dict[str, float]:
    """The numbers of one '***Statistics for: NAME***' block of perfdhcp's report."""
    block = output.split(f"***Statistics for: {name}***", 1)[1].split("***", 1)[0]
    return {
        key.strip(): float(value)
        for key, value in re.findall(r"^([a-z][a-z ]+):\s+([0-9.]+)", block, flags=re.MULTILINE)
    }


def acks(pcap: Path) -> list[tuple[IPv4Address, bytes]]:
    """(yiaddr, chaddr) of every DHCPACK our server sent, from a server-side capture."""
    found = []
    with pcap.open("rb") as stream:
        for datagram in read_capture(stream):
            if str(datagram.src) != SERVER:
                continue
            msg = decode_message(datagram.payload)
            if msg.message_type is MessageType.DHCPACK:
                found.append((msg.yiaddr, msg.hardware_address))
    return found


def test_bounded_load_no_errors_no_duplicates(relay_lab: RelayLab) -> None:
    server = relay_lab.start_server()
    done = relay_lab.gen.run(*relay_lab.perfdhcp_argv(rate=500, seconds=10, seed=42), timeout=40, check=False)
    output = done.stdout
    assert done.returncode in (0, 3), output + done.stderr  # 3: some drops
    assert "Malformed packets: 0" in output
    offers, ack_stats = section(output, "DISCOVER-OFFER"), section(output, "REQUEST-ACK")
    for stats in (offers, ack_stats):
        assert stats["non unique addresses"] == 0
        assert stats["rejected leases"] == 0
        assert stats["drops ratio"] < 1.0, output
    assert ack_stats["received packets"] >= 4000
    server.signal(signal.SIGTERM)
    server.popen.wait(10)
    store = SqliteStore(relay_lab.store)
    try:
        leases = [lease for lease in store.load().leases.values() if lease.state is LeaseState.BOUND]
    finally:
        store.close()
    assert len(leases) >= ack_stats["received packets"]
    assert len({lease.client for lease in leases}) == len(leases)  # one address per client


def test_kill_9_loses_no_acked_lease(relay_lab: RelayLab) -> None:
    capture = relay_lab.lab.capture(relay_lab.srv, name="acks", filt="udp src port 67 and src host " + SERVER)
    server = relay_lab.start_server()
    load = relay_lab.gen.start(*relay_lab.perfdhcp_argv(rate=1000, seconds=10, seed=42), name="perfdhcp")
    time.sleep(3)  # external processes: let ACKs flow, then pull the plug mid-run
    server.kill()
    before_restart = len(acks(capture.path))
    assert before_restart > 500
    restarted = relay_lab.start_server()  # same SQLite file
    load.stop()
    # New clients (another seed) after the restart: none may get an address ACKed before.
    second = relay_lab.gen.run(*relay_lab.perfdhcp_argv(rate=500, seconds=4, seed=7), timeout=30, check=False)
    assert "non unique addresses: 0" in second.stdout
    restarted.signal(signal.SIGTERM)
    restarted.popen.wait(10)
    pcap = capture.stop()
    sent = acks(pcap)
    store = SqliteStore(relay_lab.store)
    try:
        leases = store.load().leases
    finally:
        store.close()
    for address, chaddr in sent:
        lease = leases.get(address)
        assert lease is not None, f"ACKed {address} to {chaddr.hex(':')} is not in the store"
        assert lease.state is LeaseState.BOUND
        assert lease.chaddr[: len(chaddr)] == chaddr, f"{address} is in the store for another client"
    owner: dict[IPv4Address, bytes] = {}
    for address, chaddr in sent:
        assert owner.setdefault(address, chaddr) == chaddr, f"{address} ACKed to two clients"
