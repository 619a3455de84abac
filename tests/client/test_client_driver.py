"""The asyncio driver and the embedding example (examples/client_embed.py, shown in
docs/client.md) against our server engine over real UDP sockets on the loopback interface."""

from __future__ import annotations

import asyncio
import importlib
import json
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, cast

import pytest
from client_helpers import client_config, mac, provision, server

from dhcp_client.driver import open_client_socket
from dhcp_client.machine import ClientMachine, State
from dhcp_server.actions import Received, Reply
from dhcp_server.engine import ServerEngine
from dhcp_server.model import CeRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STATIC_PEER = IPv4Address("10.77.0.200")


class _ServerProtocol(asyncio.DatagramProtocol):
    """Our engine on a loopback socket; every reply goes to the client's loopback port."""

    def __init__(self, engine: ServerEngine, client_port: int) -> None:
        self.engine = engine
        self.client_port = client_port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        out = self.engine.handle(Received(data, IPv4Address(0), 68, "eth0"), time.time())
        self.send(out.replies)

    def send(self, replies: list[Reply]) -> None:
        assert self.transport is not None
        for reply in replies:
            self.transport.sendto(reply.payload, ("127.0.0.1", self.client_port))


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def test_the_embedding_example_binds_informs_and_follows_a_forcerenew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        example = importlib.import_module("client_embed")
    finally:
        sys.path.remove(str(EXAMPLES))
    run_client: Callable[..., Coroutine[Any, Any, ClientMachine]] = example.run_client

    engine = server()
    provision(engine, {1: frozenset({7})}, now=time.time())
    state_file = tmp_path / "client.json"

    async def scenario() -> ClientMachine:
        loop = asyncio.get_running_loop()
        sock = open_client_socket(None, "127.0.0.1", 0)
        client_port = sock.getsockname()[1]
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _ServerProtocol(engine, client_port), local_addr=("127.0.0.1", 0)
        )
        server_port = transport.get_extra_info("sockname")[1]
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_client(
                "lo",
                client_config(1),
                state_file,
                stop,
                sock=sock,
                destination=lambda transmit: ("127.0.0.1", server_port),
            )
        )
        try:
            await _until(lambda: engine.counters["inform:vpn_data"] == 1)
            # A second CE joins VPN 7 at a static address: the server FORCERENEWs ce1.
            outcome = engine.put_ce(
                CeRecord("ce9", None, None, frozenset({7}), STATIC_PEER), None, time.time()
            )
            assert not outcome.replies

            async def server_timers() -> None:  # what the server's driver does
                while True:
                    proto.send(engine.on_timer(time.time()).replies)
                    await asyncio.sleep(0.05)

            pump = asyncio.create_task(server_timers())
            await _until(lambda: engine.counters["inform:vpn_data"] == 2)
            pump.cancel()
            await asyncio.sleep(0.05)
        finally:
            stop.set()
            machine = await task
            transport.close()
        return machine

    machine = asyncio.run(scenario())
    assert machine.state is State.STOPPED
    assert machine.counters["accepted:forcerenew"] == 1
    assert machine.peers == {7: frozenset({STATIC_PEER})}
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("bound 10.77.0.5")
    assert printed[-1] == "VPN 7: +['10.77.0.200'] -[]"
    # The lease and the replay floor are on disk, private, for the next start's INIT-REBOOT.
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    saved = json.loads(state_file.read_text())
    assert saved["lease"]["address"].startswith("10.77.0.")
    assert saved["server_replay"] > 0
    assert saved["peers"] == {"7": ["10.77.0.200"]}
    assert mac(1)
