"""``ce-autoconf vpn|ce|lease|forcerenew|quarantine`` in-process against a real API server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import ApiThread
from engine_helpers import Client, config

from ce_autoconf.cli import main
from dhcp_server.model import AuthPolicy, QuarantinePolicy
from options import MessageType

KEY = bytes.fromhex("c0ffee00112233445566778899aabbcc")
MAC = bytes.fromhex("020000770001")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiThread]:
    server = ApiThread(tmp_path)
    try:
        yield server
    finally:
        server.close()


class Cli:
    def __init__(self, api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
        self.api = api
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main([*argv, "--api", self.api.url, "--token-file", str(self.api.token_file)])
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err

    def json(self, *argv: str) -> object:
        status, out, err = self(*argv, "--json")
        assert status == 0, err
        return json.loads(out)


@pytest.fixture
def cli(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(api, capsys)


def key_file(tmp_path: Path, key: bytes = KEY, mode: int = 0o600) -> Path:
    path = tmp_path / "ce.key"
    path.write_text("# RFC 3118 key of ce-1\n" + key.hex(":") + "\n")
    path.chmod(mode)
    return path


def test_vpn_add_list_delete(cli: Cli, api: ApiThread) -> None:
    status, out, _ = cli("vpn", "add", "7", "corp", "--server", "192.0.2.10", "--server", "192.0.2.11")
    assert (status, out) == (0, "VPN 7 created\n")
    assert api.store.load().vpns[7].vpn_servers[1].compressed == "192.0.2.11"
    status, _, err = cli("vpn", "add", "7", "again")
    assert status == 1
    assert "VPN 7 exists" in err
    assert "[HTTP 409]" in err
    status, out, _ = cli(
        "vpn",
        "add",
        "7",
        "corp-2",
        "--auth",
        "optional",
        "--replace",
        "--server",
        "192.0.2.10",
        "--server",
        "192.0.2.11",
    )
    assert (status, out) == (0, "VPN 7 replaced\n")
    status, out, _ = cli("vpn", "list")
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "AUTH", "SERVERS", "MEMBERS"]
    assert row.split() == ["7", "corp-2", "optional", "192.0.2.10,192.0.2.11", "-"]
    assert cli.json("vpn", "list") == {
        "vpns": [
            {
                "id": 7,
                "name": "corp-2",
                "vpn_servers": ["192.0.2.10", "192.0.2.11"],
                "auth": "optional",
                "members": [],
            }
        ]
    }
    assert cli("vpn", "delete", "7")[:2] == (0, "VPN 7 deleted\n")
    assert api.store.load().vpns == {}
    status, _, err = cli("vpn", "delete", "7")
    assert status == 1
    assert "no VPN 7" in err


def test_ce_add_with_a_key_file_list_delete(cli: Cli, api: ApiThread, tmp_path: Path) -> None:
    cli("vpn", "add", "7", "corp")
    path = key_file(tmp_path)
    status, out, err = cli(
        "ce", "add", "ce-1", "--hw", MAC.hex(":"), "--secret-id", "31", "--key-file", str(path), "--vpn", "7"
    )
    assert (status, out, err) == (0, "CE ce-1 created\n", "")
    assert api.store.load().secrets[31] == KEY
    status, out, _ = cli("ce", "add", "ce-1", "--hw", MAC.hex(), "--secret-id", "31", "--vpn", "7")
    assert (status, out) == (0, "CE ce-1 updated\n")
    assert api.store.load().secrets[31] == KEY  # kept

    status, out, _ = cli("ce", "list")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "CLIENT", "SECRET", "ID", "KEY", "VPNS", "ADDRESS", "STATIC"]
    assert row.split() == ["ce-1", "hw:01:02:00:00:77:00:01", "31", "yes", "7", "-", "-"]
    listed = cli.json("ce", "list")
    assert isinstance(listed, dict)
    assert listed["ces"][0]["has_key"] is True
    assert KEY.hex() not in json.dumps(listed)

    assert cli("ce", "delete", "ce-1")[:2] == (0, "CE ce-1 deleted\n")
    assert api.store.load().ces == {}
    status, _, err = cli("ce", "delete", "ce-1")
    assert (status, "no CE ce-1" in err) == (1, True)


def test_the_key_is_never_on_the_command_line_and_the_file_must_be_private(
    cli: Cli, api: ApiThread, tmp_path: Path
) -> None:
    # There is no --key option at all.
    status, _, err = cli("ce", "add", "ce-1", "--hw", MAC.hex(), "--secret-id", "1", "--key", KEY.hex())
    assert status == 2
    assert "never taken on the command line" in err
    assert KEY.hex() not in err
    # ...nor is a key given where its file belongs repeated back.
    status, _, err = cli(
        "ce", "add", "ce-1", "--hw", MAC.hex(), "--secret-id", "1", "--key-file", KEY.hex(":")
    )
    assert status == 2
    assert "cannot open the key file given" in err
    assert KEY.hex(":") not in err
    loose = key_file(tmp_path, mode=0o644)
    status, out, err = cli(
        "ce", "add", "ce-1", "--hw", MAC.hex(), "--secret-id", "1", "--key-file", str(loose)
    )
    assert status == 2
    assert "chmod 600" in err
    assert KEY.hex(":") not in err + out
    garbage = tmp_path / "garbage.key"
    garbage.write_text("this is not hex but maybe a passphrase\n")
    garbage.chmod(0o600)
    status, out, err = cli(
        "ce", "add", "ce-1", "--hw", MAC.hex(), "--secret-id", "1", "--key-file", str(garbage)
    )
    assert status == 2
    assert "hexadecimal" in err
    assert "passphrase" not in err + out
    status, _, err = cli("ce", "add", "ce-1", "--hw", MAC.hex(), "--key-file", str(key_file(tmp_path)))
    assert (status, "--key-file needs --secret-id" in err) == (2, True)
    assert api.store.load().ces == {}


def test_api_validation_errors_name_the_field(cli: Cli) -> None:
    status, _, err = cli("ce", "add", "ce-1", "--hw", "zz:zz")
    assert status == 1
    assert "(hw) [HTTP 400]" in err


def test_lease_list_and_forcerenew(cli: Cli, api: ApiThread, tmp_path: Path) -> None:
    cli("vpn", "add", "7", "corp")
    cli(
        "ce",
        "add",
        "ce-1",
        "--hw",
        MAC.hex(),
        "--secret-id",
        "31",
        "--key-file",
        str(key_file(tmp_path)),
        "--vpn",
        "7",
    )
    client = Client(MAC, secret_id=31, key=KEY)
    address = api.bind(client)

    status, out, _ = cli("lease", "list")
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["ADDRESS", "STATE", "CE", "CLIENT", "EXPIRES", "HOSTNAME"]
    assert row.split() == [str(address), "bound", "ce-1", str(client.key_id), "2027-01-15T08:10:00Z", "-"]
    assert cli.json("lease", "list", "--state", "released") == {"leases": []}

    before = api.call(lambda: len(api.manager.sent))
    status, out, _ = cli("forcerenew", "ce-1")
    assert (status, out) == (0, "FORCERENEW to CE ce-1 scheduled\n")
    assert api.call(lambda: len(api.manager.sent)) == before + 1
    status, _, err = cli("forcerenew", "nobody")
    assert (status, "no CE nobody" in err) == (1, True)


def test_quarantine_list_and_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(AuthPolicy.OFF, quarantine=QuarantinePolicy(max_messages=2, window=60, duration=600))
    api = ApiThread(tmp_path, server_config=cfg)
    try:
        cli = Cli(api, capsys)
        flooder = Client(bytes.fromhex("020000990001"))
        for _ in range(4):
            api.send(flooder.message(MessageType.DHCPDISCOVER))
        status, out, _ = cli("quarantine", "list")
        assert status == 0
        assert out.splitlines()[1].split() == [str(flooder.key_id), "-", "2027-01-15T08:10:00Z"]
        status, out, _ = cli("quarantine", "release", str(flooder.key_id))
        assert (status, out) == (0, f"{flooder.key_id} released\n")
        assert cli.json("quarantine", "list") == {"quarantined": []}
        status, _, err = cli("quarantine", "release", str(flooder.key_id))
        assert (status, "not quarantined" in err) == (1, True)
    finally:
        api.close()


def test_defaults_come_from_the_environment(
    api: ApiThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CE_AUTOCONF_API", api.url)
    monkeypatch.setenv("CE_AUTOCONF_TOKEN_FILE", str(api.token_file))
    assert main(["vpn", "add", "1", "env"]) == 0
    capsys.readouterr()
    assert main(["vpn", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vpns"][0]["name"] == "env"


def test_wrong_token_unreachable_api_and_missing_token(
    api: ApiThread, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CE_AUTOCONF_TOKEN_FILE", raising=False)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token-0123456789\n")
    wrong.chmod(0o600)
    assert main(["vpn", "list", "--api", api.url, "--token-file", str(wrong)]) == 1
    assert "missing or wrong bearer token [HTTP 401]" in capsys.readouterr().err

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert (
        main(["vpn", "list", "--api", f"http://127.0.0.1:{free}", "--token-file", str(api.token_file)]) == 1
    )
    assert "cannot reach the API" in capsys.readouterr().err

    assert main(["vpn", "list", "--api", api.url]) == 2
    assert "no API token" in capsys.readouterr().err
    assert main(["vpn", "list", "--api", "file:///etc/passwd", "--token-file", str(api.token_file)]) == 2
    assert "http://" in capsys.readouterr().err
