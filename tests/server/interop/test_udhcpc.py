"""busybox udhcpc (no authentication) gets, renews and releases a lease from our server."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from netns import wait_for

from dhcp_server.model import AuthPolicy, ClientKey, LeaseState

from .conftest import CLIENT_MAC, POOL, ServerLab, keep_capture, server_config

SCRIPT = """#!/bin/sh
# udhcpc event script: log the event, configure the address inside the client namespace only.
echo "$1 ip=$ip lease=$lease serverid=$serverid" >> "{log}"
case "$1" in
    deconfig) ip -4 addr flush dev "$interface" ;;
    bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
esac
exit 0
"""


def test_udhcpc_gets_renews_and_releases(
    server_lab: ServerLab, require_tools: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    tools = require_tools("busybox", "tcpdump")
    events = tmp_path / "udhcpc-events.log"
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT.format(log=events))
    script.chmod(0o755)
    server = server_lab.start_server(server_config(AuthPolicy.OFF))
    capture = server_lab.lab.capture(server_lab.server_ns, name="udhcpc", filt="udp port 67 or udp port 68")
    # udhcpc sends option 61 = htype 1 + its MAC
    client = ClientKey.from_client_id(b"\x01" + bytes.fromhex(CLIENT_MAC.replace(":", "")))

    def logged(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, events.read_text()) if events.exists() else None

    udhcpc = server_lab.client_ns.start(
        tools["busybox"],
        "udhcpc",
        "-f",
        "-i",
        "eth0",
        "-s",
        str(script),
        "-t",
        "5",
        "-T",
        "1",
        "-A",
        "1",
        name="udhcpc",
    )
    bound = wait_for(lambda: logged(r"bound ip=(\S+) lease=(\d+)"), 20, what="udhcpc bound")
    address = IPv4Address(bound.group(1))
    assert address in POOL
    assert bound.group(2) == "600"
    lease = server.store.load().leases[address]
    assert lease.client == client
    assert lease.state is LeaseState.BOUND
    first_update = lease.updated

    udhcpc.signal(signal.SIGUSR1)  # renew: a unicast REQUEST from the bound address
    wait_for(lambda: logged(r"renew ip=" + re.escape(str(address))), 20, what="udhcpc renewed")
    renewed = server.store.load().leases[address]
    assert renewed.state is LeaseState.BOUND and renewed.updated > first_update
    assert server.engine.counters["received:DHCPREQUEST"] >= 2

    udhcpc.signal(signal.SIGUSR2)  # release
    wait_for(
        lambda: server.store.load().leases[address].state is LeaseState.RELEASED, 20, what="lease released"
    )
    assert server.engine.counters["received:DHCPRELEASE"] == 1
    udhcpc.stop()
    pcap = capture.stop()
    assert pcap.stat().st_size > 0
    keep_capture(pcap, "udhcpc-bind-renew-release")
