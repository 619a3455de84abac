"""The swanctl.conf of benchmarks/ike_bringup.py makes swanctl send charon exactly our VICI messages.

The benchmark compares our backend with ``swanctl --load-all``; the ratio means something only if
both load the same connections. Here the real ``swanctl`` parses the generated file and talks to a
stand-in VICI server (a socket in ``tmp_path``; no charon, no root), which records every
``load-conn`` and ``load-shared`` it receives: they must equal, value for value, the messages
:mod:`ce_runtime.ike.config` builds, except for the names and the CHILD_SA's ``start_action``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from vici.protocol import FiniteStream, Message, Packet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ike_bringup

Recorded = list[tuple[str, Mapping[str, object]]]
Messages = list[dict[str, object]]
Loaded = tuple[Recorded, Messages, Messages]  # what swanctl sent; our load-conn and load-shared


def _recv(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _serve(server: socket.socket, recorded: Recorded) -> None:
    """Answer every command like a charon that has nothing loaded yet and accepts everything."""
    conn, _ = server.accept()
    with conn:
        while True:
            try:
                (length,) = struct.unpack("!I", _recv(conn, 4))
                packet = _recv(conn, length)
            except ConnectionError:
                return
            kind, name_len = packet[0], packet[1]
            name = packet[2 : 2 + name_len].decode()
            if kind == Packet.CMD_REQUEST:
                recorded.append((name, Message.deserialize(FiniteStream(packet[2 + name_len :]))))
                body: dict[str, object] = {"success": "yes"}
                if name.startswith("get-"):
                    body = {"conns": [], "keys": [], "authorities": [], "pools": []}
                reply = struct.pack("!B", Packet.CMD_RESPONSE) + Message.serialize(body)
            else:  # event (un)registration
                reply = struct.pack("!B", Packet.EVENT_CONFIRM)
            conn.sendall(struct.pack("!I", len(reply)) + reply)


@pytest.fixture
def swanctl() -> str:
    path = shutil.which("swanctl") or shutil.which("swanctl", path="/usr/sbin:/sbin")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("swanctl is not installed (./run test installs strongswan-swanctl)")
        pytest.skip("swanctl is not installed")
    return path


def _text(value: object) -> object:
    """VICI values as received (bytes) or as we build them (str) to one form."""
    if isinstance(value, Mapping):
        return {str(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


@pytest.fixture
def recorded(tmp_path: Path, swanctl: str) -> Loaded:
    peers = ike_bringup.ce_peers(3)
    conns, secrets = ike_bringup.ce_messages(peers)
    conf = tmp_path / "swanctl.conf"
    conf.write_text(ike_bringup.swanctl_conf(conns, secrets, "trap|start"))
    conf.chmod(0o600)
    sock_path = tmp_path / "vici"
    got: Recorded = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        server.listen(1)
        server.settimeout(30)
        thread = threading.Thread(target=_serve, args=(server, got), daemon=True)
        thread.start()
        done = subprocess.run(
            [swanctl, "--load-all", "--noprompt", "--file", str(conf), "--uri", f"unix://{sock_path}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        thread.join(10)
    assert done.returncode == 0, done.stdout + done.stderr
    return got, conns, secrets


def test_swanctl_sends_our_connections(
    recorded: Loaded,
) -> None:
    got, conns, _ = recorded
    sent = {name: body for cmd, msg in got if cmd == "load-conn" for name, body in msg.items()}
    assert len(sent) == len(conns) == 3
    for message in conns:
        ((name, ours),) = message.items()
        theirs = _text(sent[ike_bringup.swanctl_name(name)])
        assert isinstance(theirs, dict)
        children = theirs["children"]
        assert isinstance(children, dict)
        assert children["ipip"].pop("start_action") == "trap|start"
        expected = _text(ours)
        assert isinstance(expected, dict)
        assert expected["children"]["ipip"].pop("start_action") == "trap"
        assert theirs == expected  # proposals, mode, [ipencap] selectors, reqid, priority, timers


def test_swanctl_sends_our_keys(
    recorded: Loaded,
) -> None:
    got, _, secrets = recorded
    sent = [msg for cmd, msg in got if cmd == "load-shared"]
    assert len(sent) == len(secrets) == 3
    for theirs, ours in zip(sent, secrets, strict=True):
        # swanctl names the type after the section prefix ("ike"); charon compares it caselessly.
        assert str(_text(theirs["type"])).upper() == ours["type"] == "IKE"
        assert theirs["data"] == ours["data"]  # the same PSK bytes, not their hex text
        assert _text(theirs["owners"]) == ours["owners"]
