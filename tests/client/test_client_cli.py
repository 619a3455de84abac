"""``ce-autoconf client``: the example configuration loads, keys must be private, status prints."""

from __future__ import annotations

import io
import json
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ce_autoconf.cli import main
from dhcp_client.cli import status
from dhcp_client.events import Lease
from dhcp_client.persistence import ClientState, FileStateStore
from dhcp_client.settings import SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "client.toml"
KEY_HEX = "63:65:31:2d:73:65:63:72:65:74:2d:6b:65:79:2d:30:30:30:31"


def _config(tmp_path: Path, key_mode: int = 0o600) -> Path:
    key = tmp_path / "ce1.key"
    key.write_text(KEY_HEX + "\n")
    key.chmod(key_mode)
    text = EXAMPLE.read_text()
    text = text.replace('"/etc/ce-autoconf/ce1.key"', '"ce1.key"')
    text = text.replace('# hardware_address = "02:00:00:00:00:01"', 'hardware_address = "02:00:00:00:00:01"')
    text = text.replace('"/var/lib/ce-autoconf/client-eth0.json"', '"state.json"')
    path = tmp_path / "client.toml"
    path.write_text(text)
    return path


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    client = settings.client
    assert settings.interface == "eth0"
    assert settings.state_file == tmp_path / "state.json"
    assert client.secret_id == 0x1001
    assert client.key == b"ce1-secret-key-0001"
    assert client.hardware_address == bytes.fromhex("020000000001")
    assert (client.peer_ce_code, client.vpn_server_code, client.max_vpns) == (224, 225, 64)
    assert "ce1-secret" not in repr(client)


def test_a_key_file_others_can_read_is_refused_without_quoting_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_config(tmp_path, key_mode=0o644))
    assert "0644" in str(info.value)
    assert "63:65" not in str(info.value)


def test_status_prints_the_remembered_lease_and_peers(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lease = Lease(
        IPv4Address("10.77.0.50"), IPv4Address("10.77.0.1"), 1e12, 600, 300, 525, IPv4Address("255.255.255.0")
    )
    FileStateStore(path).save(
        ClientState(
            lease=lease,
            server_replay=42,
            nonce=bytes(16),
            peers={7: frozenset({IPv4Address("10.77.0.51"), IPv4Address("10.77.0.52")}), 8: frozenset()},
        )
    )
    assert os.stat(path).st_mode & 0o777 == 0o600
    out = io.StringIO()
    assert status(path, out, as_json=False) == 0
    text = out.getvalue()
    assert "lease: 10.77.0.50/24 from 10.77.0.1" in text
    assert "VPN 7: 10.77.0.51, 10.77.0.52" in text
    assert "VPN 8: (no peers)" in text
    out = io.StringIO()
    status(path, out, as_json=True)
    data = json.loads(out.getvalue())
    assert data["peers"]["7"] == ["10.77.0.51", "10.77.0.52"]
    assert "nonce" not in data


def test_the_dispatcher_knows_the_client_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "status", "--state", str(tmp_path / "missing.json")]) == 2
    assert "no such state file" in capsys.readouterr().err
    assert main(["client"]) == 2
