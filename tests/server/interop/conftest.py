"""Real peers against our server, each in its own network namespaces.

``server_lab`` gives a server namespace ("srv", eth0 10.77.0.1/24) linked to a client
namespace ("cli", eth0 with a fixed MAC and no address) and a way to start our server
in-process (:class:`InProcessServer`: the asyncio driver in a thread that entered the
server's namespace, a real SQLite store), so tests can call management operations
(``put_ce`` ...) on the live engine.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from dhcp_server.actions import Outcome
from dhcp_server.driver import DriverConfig, ServerDriver
from dhcp_server.engine import ServerEngine
from dhcp_server.model import AuthPolicy, PoolRange, ServerConfig, SubnetConfig
from dhcp_server.sqlite_store import SqliteStore

sys.path.append(str(Path(__file__).resolve().parents[2] / "netns"))
from netns import Lab, LoopThread, Namespace, lab, require_tools

__all__ = ["InProcessServer", "ServerLab", "keep_capture", "lab", "require_tools", "server_lab"]

SERVER = IPv4Address("10.77.0.1")
NETWORK = IPv4Network("10.77.0.0/24")
POOL = PoolRange(IPv4Address("10.77.0.50"), IPv4Address("10.77.0.99"))
CLIENT_MAC = "02:00:00:77:00:32"


def server_config(auth: AuthPolicy, lease_time: int = 600) -> ServerConfig:
    subnet = SubnetConfig(
        network=NETWORK,
        pools=(POOL,),
        routers=(SERVER,),
        lease_time=lease_time,
        auth=auth,
        interface="eth0",
    )
    return ServerConfig(server_id=SERVER, subnets=(subnet,))


def keep_capture(pcap: Path, name: str) -> None:
    """Copy a capture to ``$CEA_CAPTURE_DIR/<name>.pcap`` when set (how tests/vectors/ was filled)."""
    target = os.environ.get("CEA_CAPTURE_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pcap, Path(target) / f"{name}.pcap")


@dataclass
class InProcessServer:
    thread: LoopThread
    driver: ServerDriver
    store: SqliteStore

    @property
    def engine(self) -> ServerEngine:
        return self.driver.engine

    def manage(self, operation: Callable[[float], Outcome]) -> Outcome:
        """Run a management operation in the server's loop; returns once it is durable."""
        return self.thread.call(self.driver.manage(operation))

    def stop(self) -> None:
        try:
            self.thread.call(self.driver.stop())
        finally:
            self.thread.close()
            self.store.close()


@dataclass
class ServerLab:
    lab: Lab
    server_ns: Namespace
    client_ns: Namespace
    workdir: Path
    servers: list[InProcessServer] = field(default_factory=list)

    def start_server(
        self, config: ServerConfig, prepare: Callable[[ServerEngine], Outcome] | None = None
    ) -> InProcessServer:
        """Our server on srv:eth0; ``prepare`` (e.g. adding CEs) runs and commits before it listens."""
        store = SqliteStore(self.workdir / "server.sqlite")
        engine = ServerEngine(config, store.load())
        if prepare is not None:
            store.commit(prepare(engine).writes)
        driver = ServerDriver(engine, store, DriverConfig(interfaces=("eth0",)))
        thread = LoopThread(self.server_ns)
        server = InProcessServer(thread, driver, store)
        thread.call(driver.start())
        self.servers.append(server)
        return server


@pytest.fixture
def server_lab(lab: Lab, tmp_path: Path) -> Iterator[ServerLab]:
    server_ns = lab.namespace("srv")
    client_ns = lab.namespace("cli")
    lab.link(server_ns, client_ns, a_address=f"{SERVER}/24")
    client_ns.ip("link", "set", "eth0", "down")
    client_ns.ip("link", "set", "eth0", "address", CLIENT_MAC)
    client_ns.ip("link", "set", "eth0", "up")
    the_lab = ServerLab(lab, server_ns, client_ns, tmp_path)
    try:
        yield the_lab
    finally:
        for server in the_lab.servers:
            server.stop()
