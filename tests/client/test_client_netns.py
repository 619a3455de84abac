"""Our client in a network namespace against Kea and dnsmasq (Debian packages), over a veth
pair: lease, renew at T1, reboot with the remembered lease (INIT-REBOOT), and rebinding then
expiry when the server is gone. Skips without root or the servers; FAILS under CI=true."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "netns"))  # the harness
from netns import Lab, LoopThread, Namespace, Process, wait_for

pytest_plugins = ["netns"]  # the lab and require_tools fixtures

from dhcp_client.config import ClientConfig  # noqa: E402
from dhcp_client.driver import ClientDriver, open_client_socket  # noqa: E402
from dhcp_client.events import ClientEvent, LeaseBound, LeaseLost, LeaseRenewed  # noqa: E402
from dhcp_client.iface import InterfaceConfigurator  # noqa: E402
from dhcp_client.machine import ClientMachine, State  # noqa: E402
from dhcp_client.persistence import FileStateStore  # noqa: E402

SERVER_ADDRESS = "10.88.0.1"
LEASE, T1, T2 = 12, 4, 8


def kea(lab: Lab, ns: Namespace, binary: str) -> Process:
    config = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["eth0"]},
            "lease-database": {"type": "memfile", "persist": False},
            "valid-lifetime": LEASE,
            "renew-timer": T1,
            "rebind-timer": T2,
            "authoritative": True,
            "subnet4": [{"subnet": "10.88.0.0/24", "pools": [{"pool": "10.88.0.50 - 10.88.0.99"}]}],
            "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}],
        }
    }
    path = lab.workdir / "kea.json"
    path.write_text(json.dumps(config))
    env = {
        "KEA_LOCKFILE_DIR": str(lab.workdir),
        "KEA_PIDFILE_DIR": str(lab.workdir),
        "PATH": "/usr/sbin:/usr/bin",
    }
    process = ns.start(binary, "-c", str(path), name="kea", env=env)
    wait_for(lambda: "DHCP4_STARTED" in process.log() or not process.running(), 15, what="kea start")
    assert process.running(), process.log()
    return process


def dnsmasq(lab: Lab, ns: Namespace, binary: str) -> Process:
    # dnsmasq's shortest lease is two minutes; T1 and T2 are set by option to keep the test short.
    process = ns.start(
        binary,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=eth0",
        "--bind-interfaces",
        "--dhcp-authoritative",
        f"--dhcp-leasefile={lab.workdir / 'dnsmasq.leases'}",
        f"--pid-file={lab.workdir / 'dnsmasq.pid'}",
        "--user=root",
        "--dhcp-range=10.88.0.50,10.88.0.99,255.255.255.0,2m",
        f"--dhcp-option=option:T1,{T1}",
        f"--dhcp-option=option:T2,{T2}",
        "--log-dhcp",
        name="dnsmasq",
    )
    wait_for(lambda: "started" in process.log() or not process.running(), 15, what="dnsmasq start")
    assert process.running(), process.log()
    return process


class RunningClient:
    """Our client on eth0 of ``ns``, in an asyncio loop in a thread inside that namespace."""

    def __init__(self, lab: Lab, ns: Namespace, state: Path) -> None:
        self.events: list[ClientEvent] = []
        self.loop = LoopThread(ns)
        mac = bytes.fromhex(lab.mac(ns).replace(":", ""))
        config = ClientConfig(hardware_address=mac, nonce_capable=False, inform=False)
        self.machine = ClientMachine(config, FileStateStore(state), random.Random(4))
        configure = InterfaceConfigurator("eth0", default_route=False)

        def on_event(event: ClientEvent) -> None:
            configure(event)
            self.events.append(event)

        async def make() -> ClientDriver:
            return ClientDriver(self.machine, open_client_socket("eth0"), on_event)

        self.driver = self.loop.call(make())
        self.task = self.loop.submit(self.driver.run())

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(predicate, timeout, what=f"{what} (events: {self.events}, state {self.machine.state})")

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    def stop(self) -> None:
        assert self.loop.loop is not None
        self.loop.loop.call_soon_threadsafe(self.driver.stop)
        self.task.result(10)
        self.loop.close()


@pytest.mark.parametrize("server", ["kea-dhcp4", "dnsmasq"])
def test_lease_renew_reboot_rebind_against_a_real_server(
    lab: Lab, require_tools: Callable[..., dict[str, str]], server: str
) -> None:
    binary = require_tools(server)[server]
    server_ns, client_ns = lab.namespace("srv"), lab.namespace("ce")
    lab.link(server_ns, client_ns, a_address=f"{SERVER_ADDRESS}/24")
    process = (kea if server == "kea-dhcp4" else dnsmasq)(lab, server_ns, binary)
    state = lab.workdir / "client.json"

    client = RunningClient(lab, client_ns, state)
    client.wait(lambda: client.count(LeaseBound) == 1, 20, "lease")
    bound = next(e for e in client.events if isinstance(e, LeaseBound))
    address = bound.lease.address
    assert str(address).startswith("10.88.0.")
    assert (bound.lease.renewal_time, bound.lease.rebinding_time) == (T1, T2)
    wait_for(lambda: str(Lab.address(client_ns)) == f"{address}/24", 5, what="address on eth0")
    # Renewal at T1: unicast to the server from the leased address, answered unicast.
    client.wait(lambda: client.count(LeaseRenewed) >= 1, T1 + 10, "renewal at T1")
    assert client.machine.state is State.BOUND
    client.stop()

    # Reboot: a new client on the same state file asks for its address with INIT-REBOOT.
    client = RunningClient(lab, client_ns, state)
    client.wait(lambda: client.count(LeaseBound) == 1, 20, "reboot")
    rebooted = next(e for e in client.events if isinstance(e, LeaseBound))
    assert rebooted.lease.address == address
    assert client.machine.counters["gave_up:rebooting"] == 0

    # The server goes away: RENEWING at T1, REBINDING at T2, and (Kea's short lease) expiry.
    process.stop()
    lease = client.machine.lease
    assert lease is not None
    client.wait(lambda: client.machine.state is State.REBINDING, T2 + 10, "rebinding")
    if server == "kea-dhcp4":
        client.wait(lambda: client.count(LeaseLost) == 1, LEASE + 10, "expiry")
        assert client.events[-1] == LeaseLost(address, "expired")
        wait_for(lambda: Lab.address(client_ns) is None, 5, what="address removed by the adapter")
    client.stop()
    assert time.time() > lease.t2_at
