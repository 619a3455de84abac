"""Embedding the ce-autoconf DHCP client: the whole program a CE vendor needs.

Run as root on the CE:  python3 client_embed.py eth0 0x1001 /etc/ce-autoconf/ce1.key
(the key file holds the RFC 3118 key in hexadecimal, mode 0600).
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from dhcp_client import (
    ClientConfig,
    ClientDriver,
    ClientEvent,
    ClientMachine,
    FileStateStore,
    LeaseBound,
    LeaseLost,
    Transmit,
    VpnPeersChanged,
    open_client_socket,
)


def on_event(event: ClientEvent) -> None:
    """Your hook: configure the address, bring IPsec tunnels to each peer up or down."""
    if isinstance(event, LeaseBound):
        print(f"bound {event.lease.address}/{event.lease.prefix_length} via {event.lease.server_id}")
    elif isinstance(event, LeaseLost):
        print(f"lost {event.address} ({event.reason}): take the tunnels down")
    elif isinstance(event, VpnPeersChanged):
        print(f"VPN {event.vpn_id}: +{sorted(map(str, event.added))} -{sorted(map(str, event.removed))}")


async def run_client(
    interface: str,
    config: ClientConfig,
    state_file: Path,
    stop: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    destination: Callable[[Transmit], tuple[str, int]] | None = None,
) -> ClientMachine:
    """Run until ``stop`` is set; the lease and replay state survive in ``state_file``.

    ``sock`` and ``destination`` are for the project's loopback test only.
    """
    machine = ClientMachine(config, FileStateStore(state_file), random.SystemRandom())
    driver = ClientDriver(machine, sock or open_client_socket(interface), on_event, destination=destination)
    task = asyncio.create_task(driver.run())
    await stop.wait()
    driver.stop()  # keeps the lease: the next start is an INIT-REBOOT
    await task
    return machine


if __name__ == "__main__":
    ifname, sid, key_path = sys.argv[1], int(sys.argv[2], 0), Path(sys.argv[3])
    mac = bytes.fromhex(Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", ""))
    key_hex = key_path.read_text().strip().replace(":", "")
    cfg = ClientConfig(hardware_address=mac, secret_id=sid, key=bytes.fromhex(key_hex))
    asyncio.run(run_client(ifname, cfg, Path(f"/var/lib/ce-{ifname}.json"), asyncio.Event()))
