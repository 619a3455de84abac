"""The UDP driver on real sockets between two network namespaces.

The server runs in-process (an asyncio loop in a thread that entered the server's
namespace); the test's client sockets live in the client's namespace. Stores are real
(MemoryStore, SqliteStore, PostgresStore); ``GatedStore`` is a MemoryStore whose commit can be held, to
observe that an ACK never leaves before its commit returns.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import psycopg
import pytest
from pg_cluster import Cluster

sys.path.append(str(Path(__file__).resolve().parent.parent / "netns"))  # the harness
from netns import Lab, LoopThread, Namespace, wait_for

pytest_plugins = ["netns"]  # the lab and require_tools fixtures

from dhcp_server import cli  # noqa: E402
from dhcp_server.actions import Outcome, Received, Write  # noqa: E402
from dhcp_server.config import load_config  # noqa: E402
from dhcp_server.driver import DriverConfig, ServerDriver  # noqa: E402
from dhcp_server.engine import ServerEngine  # noqa: E402
from dhcp_server.model import AuthPolicy, PoolRange, ServerConfig, SubnetConfig  # noqa: E402
from dhcp_server.netutil import NeighbourError  # noqa: E402
from dhcp_server.postgres_store import PostgresStore  # noqa: E402
from dhcp_server.sqlite_store import SqliteStore  # noqa: E402
from dhcp_server.store import MemoryStore, Store  # noqa: E402
from options import BOOTREQUEST, DhcpMessage, MessageType, Options, decode_message, encode_message  # noqa: E402
from options.message import FLAG_BROADCAST  # noqa: E402
from options.rfc2132 import MESSAGE_TYPE, REQUESTED_IP_ADDRESS, SERVER_IDENTIFIER  # noqa: E402

SERVER = IPv4Address("10.77.0.1")
CLIENT = IPv4Address("10.77.0.2")
POOL = PoolRange(IPv4Address("10.77.0.50"), IPv4Address("10.77.0.99"))


def server_config(interface: str | None = "eth0") -> ServerConfig:
    subnet = SubnetConfig(
        network=IPv4Network("10.77.0.0/24"),
        pools=(POOL,),
        routers=(SERVER,),
        lease_time=600,
        auth=AuthPolicy.OFF,
        interface=interface,
    )
    return ServerConfig(server_id=SERVER, subnets=(subnet,))


def message(
    message_type: MessageType,
    mac: bytes,
    xid: int,
    *,
    broadcast: bool = True,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    giaddr: IPv4Address | None = None,
) -> bytes:
    items = [MESSAGE_TYPE.item(message_type)]
    if requested is not None:
        items.append(REQUESTED_IP_ADDRESS.item(requested))
    if server_id is not None:
        items.append(SERVER_IDENTIFIER.item(server_id))
    msg = DhcpMessage(
        op=BOOTREQUEST,
        xid=xid,
        chaddr=mac,
        flags=FLAG_BROADCAST if broadcast else 0,
        giaddr=giaddr or IPv4Address(0),
        hops=1 if giaddr is not None else 0,
        options=Options(items),
    )
    return encode_message(msg)


class GatedStore(MemoryStore):
    """A MemoryStore whose commits wait for ``gate`` (set by default)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def commit(self, writes: Sequence[Write]) -> None:
        self.entered.set()
        assert self.gate.wait(20)
        super().commit(writes)
        self.batches.append(len(writes))


@dataclass
class Bench:
    lab: Lab
    server_ns: Namespace
    client_ns: Namespace
    thread: LoopThread
    driver: ServerDriver
    store: Store

    def client_socket(self, port: int = 68, bind: str = "0.0.0.0") -> socket.socket:
        with self.client_ns.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, 25, b"eth0")  # SO_BINDTODEVICE
            sock.bind((bind, port))
        sock.settimeout(5)
        return sock

    def raw_socket(self) -> socket.socket:
        """An AF_PACKET socket on the client's eth0: sees frames whatever their IP address."""
        with self.client_ns.entered():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
            sock.bind(("eth0", 0x0800))
        sock.settimeout(5)
        return sock


def start_bench(
    lab: Lab,
    store: Store,
    engine_cls: type[ServerEngine] = ServerEngine,
    clock: Callable[[], float] = time.time,
    **driver: object,
) -> Bench:
    server_ns = lab.namespace("srv")
    client_ns = lab.namespace("cli")
    lab.link(server_ns, client_ns, a_address=f"{SERVER}/24", b_address=f"{CLIENT}/24")
    engine = engine_cls(server_config(), store.load())
    config = DriverConfig(interfaces=("eth0",), **driver)  # type: ignore[arg-type]
    thread = LoopThread(server_ns)
    the_driver = ServerDriver(engine, store, config, clock=clock)
    thread.call(the_driver.start())
    return Bench(lab, server_ns, client_ns, thread, the_driver, store)


def receive(sock: socket.socket, timeout: float = 5.0) -> tuple[DhcpMessage, tuple[str, int]]:
    sock.settimeout(timeout)
    data, source = sock.recvfrom(4096)
    return decode_message(data), source


def receive_udp_frame(sock: socket.socket, port: int = 68) -> tuple[IPv4Address, DhcpMessage]:
    """The next IPv4/UDP datagram to ``port`` seen on the raw socket: (IP destination, message)."""
    while True:
        frame = sock.recv(65535)
        ihl = (frame[0] & 0x0F) * 4
        if frame[9] != 17:
            continue
        _sport, dport = struct.unpack_from("!HH", frame, ihl)
        if dport == port:
            return IPv4Address(frame[16:20]), decode_message(frame[ihl + 8 :])


def test_discover_offer_request_ack(lab: Lab) -> None:
    store = MemoryStore()
    bench = start_bench(lab, store)
    try:
        sock = bench.client_socket()
        mac = bytes.fromhex("02aabbcc0001")
        sock.sendto(message(MessageType.DHCPDISCOVER, mac, 1), ("255.255.255.255", 67))
        offer, source = receive(sock)
        assert offer.message_type is MessageType.DHCPOFFER
        assert offer.xid == 1
        assert offer.yiaddr in POOL
        assert source == (str(SERVER), 67)
        sock.sendto(
            message(MessageType.DHCPREQUEST, mac, 2, requested=offer.yiaddr, server_id=SERVER),
            ("255.255.255.255", 67),
        )
        ack, _ = receive(sock)
        assert ack.message_type is MessageType.DHCPACK
        assert ack.yiaddr == offer.yiaddr
        lease = store.load().leases[offer.yiaddr]
        assert lease.chaddr[:6] == mac
        assert store.commits == 1
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


def test_datagrams_that_waited_too_long_are_dropped_unanswered(lab: Lab) -> None:
    """The kernel's arrival stamp against the driver's clock: to a clock 10 s ahead, a DISCOVER
    that just arrived has waited 10 s, past ``max_queue_delay``: counted, never answered."""
    bench = start_bench(lab, MemoryStore(), clock=lambda: time.time() + 10, max_queue_delay=2.0)
    try:
        sock = bench.client_socket()
        sock.sendto(
            message(MessageType.DHCPDISCOVER, bytes.fromhex("02aabbcc0042"), 42), ("255.255.255.255", 67)
        )
        wait_for(lambda: bench.driver.counters["stale"] == 1, 10, what="the stale datagram counted")
        assert bench.driver.engine.counters["received:DHCPDISCOVER"] == 0
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


def test_ack_waits_for_the_commit_and_leases_share_one(lab: Lab) -> None:
    store = GatedStore()
    bench = start_bench(lab, store)
    try:
        sock = bench.client_socket()
        macs = [bytes((2, 0, 0, 0, 1, i)) for i in range(12)]
        offers: dict[bytes, IPv4Address] = {}
        for i, mac in enumerate(macs):
            sock.sendto(message(MessageType.DHCPDISCOVER, mac, 100 + i), ("255.255.255.255", 67))
        for _ in macs:
            offer, _ = receive(sock)
            offers[offer.chaddr[:6]] = offer.yiaddr
        assert len(set(offers.values())) == len(macs)
        store.gate.clear()
        store.entered.clear()
        # The first REQUEST's commit blocks; the other REQUESTs arrive meanwhile.
        sock.sendto(
            message(MessageType.DHCPREQUEST, macs[0], 200, requested=offers[macs[0]], server_id=SERVER),
            ("255.255.255.255", 67),
        )
        assert store.entered.wait(5)
        for i, mac in enumerate(macs[1:], 1):
            sock.sendto(
                message(MessageType.DHCPREQUEST, mac, 200 + i, requested=offers[mac], server_id=SERVER),
                ("255.255.255.255", 67),
            )
        with pytest.raises(TimeoutError):
            receive(sock, timeout=0.5)  # no ACK while the commit is held
        store.gate.set()
        acks = [receive(sock)[0] for _ in macs]
        assert {a.message_type for a in acks} == {MessageType.DHCPACK}
        assert {a.chaddr[:6]: a.yiaddr for a in acks} == offers
        leases = store.load().leases
        assert {lease.chaddr[:6]: address for address, lease in leases.items()} == offers
        # One commit for the first lease, then ONE for the eleven that queued behind it.
        assert store.batches == [1, 11]
    finally:
        store.gate.set()
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


def test_unicast_reply_installs_a_neighbour_entry(lab: Lab) -> None:
    bench = start_bench(lab, MemoryStore())
    try:
        sock = bench.client_socket()
        raw = bench.raw_socket()
        mac = bytes.fromhex(Lab.mac(bench.client_ns).replace(":", ""))
        sock.sendto(message(MessageType.DHCPDISCOVER, mac, 7, broadcast=False), ("255.255.255.255", 67))
        destination, offer = receive_udp_frame(raw)
        assert offer.message_type is MessageType.DHCPOFFER
        assert destination == offer.yiaddr  # unicast to yiaddr, not broadcast
        neigh = bench.server_ns.ip("neigh", "show", str(offer.yiaddr), "dev", "eth0")
        assert mac.hex(":") in neigh
        assert bench.driver.counters["unicast_fallback_broadcast"] == 0
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


class _BrokenNeighbours:
    async def install(self, address: IPv4Address, lladdr: bytes, ifindex: int) -> None:
        raise NeighbourError("refused")

    def close(self) -> None:
        pass


def test_neighbour_failure_falls_back_to_broadcast(lab: Lab) -> None:
    bench = start_bench(lab, MemoryStore())
    bench.driver._neighbours = _BrokenNeighbours()
    try:
        raw = bench.raw_socket()
        sock = bench.client_socket()
        mac = bytes.fromhex("02aabbcc0009")
        sock.sendto(message(MessageType.DHCPDISCOVER, mac, 9, broadcast=False), ("255.255.255.255", 67))
        destination, offer = receive_udp_frame(raw)
        assert offer.message_type is MessageType.DHCPOFFER
        assert destination == IPv4Address("255.255.255.255")
        assert bench.driver.counters["unicast_fallback_broadcast"] == 1
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


def test_relayed_request_answered_to_giaddr_port_67(lab: Lab) -> None:
    bench = start_bench(lab, MemoryStore())
    try:
        relay = bench.client_socket(port=67, bind=str(CLIENT))
        mac = bytes.fromhex("02aabbcc0010")
        relay.sendto(message(MessageType.DHCPDISCOVER, mac, 10, giaddr=CLIENT), (str(SERVER), 67))
        offer, source = receive(relay)
        assert offer.message_type is MessageType.DHCPOFFER
        assert offer.giaddr == CLIENT
        assert source == (str(SERVER), 67)
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


class _FragileEngine(ServerEngine):
    """An engine with a bug for one payload: the driver must survive it."""

    def handle(self, received: Received, now: float) -> Outcome:
        if received.payload.startswith(b"BOOM"):
            raise RuntimeError("engine bug")
        return super().handle(received, now)


def test_bad_datagrams_never_stop_the_loop(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    bench = start_bench(lab, MemoryStore(), engine_cls=_FragileEngine)
    try:
        sock = bench.client_socket()
        secret = b"BOOM" + b"\x5a" * 60
        with caplog.at_level(logging.INFO, logger="dhcp_server"):
            sock.sendto(secret, ("255.255.255.255", 67))
            sock.sendto(b"\x01\x02 not dhcp", ("255.255.255.255", 67))
            sock.sendto(
                message(MessageType.DHCPDISCOVER, bytes.fromhex("02aabbcc0011"), 11), ("255.255.255.255", 67)
            )
            offer, _ = receive(sock)
        assert offer.message_type is MessageType.DHCPOFFER
        assert bench.driver.counters["internal_error"] == 1
        assert bench.driver.engine.counters["dropped:malformed"] == 1
        logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert "internal error handling a datagram" in logged
        assert "5a5a5a5a" not in logged and "ZZZZ" not in logged
        events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dhcp_server.events"]
        assert any(e["event"] == "drop" and e["counter"] == "malformed" for e in events)
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()


@pytest.mark.parametrize("in_thread", [True, False])
def test_sqlite_lease_survives_restart(lab: Lab, tmp_path: Path, in_thread: bool) -> None:
    path = tmp_path / "leases.sqlite"
    store = SqliteStore(path)
    bench = start_bench(lab, store, commit_in_thread=in_thread)
    try:
        sock = bench.client_socket()
        mac = bytes.fromhex("02aabbcc0012")
        sock.sendto(message(MessageType.DHCPDISCOVER, mac, 12), ("255.255.255.255", 67))
        offer, _ = receive(sock)
        sock.sendto(
            message(MessageType.DHCPREQUEST, mac, 13, requested=offer.yiaddr, server_id=SERVER),
            ("255.255.255.255", 67),
        )
        ack, _ = receive(sock)
        assert ack.message_type is MessageType.DHCPACK
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()
        store.close()
    reopened = SqliteStore(path)
    try:
        lease = reopened.load().leases[ack.yiaddr]
        assert lease.chaddr[:6] == mac
    finally:
        reopened.close()


def test_a_commit_that_loses_its_postgresql_connection_withholds_the_ack(lab: Lab, postgres: Cluster) -> None:
    """The contract with a real database: the store's backend is killed, the REQUEST's commit
    raises, no ACK leaves; the retransmitted REQUEST reconnects the store and is ACKed."""
    dbname = postgres.create_database()
    store = PostgresStore(postgres.dsn(dbname))
    bench = start_bench(lab, store)
    try:
        sock = bench.client_socket()
        mac = bytes.fromhex("02aabbcc0077")
        sock.sendto(message(MessageType.DHCPDISCOVER, mac, 70), ("255.255.255.255", 67))
        offer, _ = receive(sock)
        assert store._conn is not None
        with postgres.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
        request = message(MessageType.DHCPREQUEST, mac, 71, requested=offer.yiaddr, server_id=SERVER)
        sock.sendto(request, ("255.255.255.255", 67))
        with pytest.raises(TimeoutError):
            receive(sock, timeout=1.0)
        assert bench.driver.counters["commit_failed"] == 1
        assert bench.driver.counters["replies_withheld"] == 1
        sock.sendto(request, ("255.255.255.255", 67))  # the client retransmits
        ack, _ = receive(sock)
        assert (ack.message_type, ack.yiaddr) == (MessageType.DHCPACK, offer.yiaddr)
    finally:
        bench.thread.call(bench.driver.stop())
        bench.thread.close()
        store.close()
    with psycopg.connect(postgres.dsn(dbname)) as conn:
        assert conn.execute("SELECT address, state FROM leases").fetchall() == [(offer.yiaddr, "bound")]


def test_cli_check_reads_the_example_configuration(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    example = Path(__file__).resolve().parents[2] / "examples" / "server.toml"
    # --check reads the secrets and token files too: as checked out, the example's secrets
    # file is not private (git keeps no 0600) and its token file is not there.
    args = parser.parse_args(["run", "--config", str(example), "--check"])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(args, out, err, io.BytesIO()) == 2
    assert "secrets.toml" in err.getvalue()
    # Deployed as the example says: secrets 0600, a token file of mode 0600.
    config = tmp_path / "server.toml"
    config.write_text(example.read_text().replace("/etc/ce-autoconf/api.token", "api.token"))
    (tmp_path / "secrets.toml").write_bytes((example.parent / "secrets.toml").read_bytes())
    (tmp_path / "secrets.toml").chmod(0o600)
    (tmp_path / "api.token").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "api.token").chmod(0o600)
    args = parser.parse_args(["run", "--config", str(config), "--check"])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(args, out, err, io.BytesIO()) == 0, err.getvalue()
    assert "valid" in out.getvalue()
    runtime = cli.runtime_from_config(load_config(example))
    assert runtime.driver.port == 67 and runtime.store is not None
