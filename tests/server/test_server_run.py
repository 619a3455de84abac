"""``ce-autoconf server run``: the wiring of configuration, secrets file, store, driver and API.

In a namespace: the real command as a subprocess serves a DHCP exchange (our client, also a
subprocess, binds with RFC 3118 delayed authentication using a key that exists only in the
secrets file) AND answers the management API with the token; SIGTERM stops it cleanly.
Without namespaces: the secrets merge rule, ``--check``, and the exit status of unusable
files.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from netns import Lab, wait_for

from ce_autoconf.cli import main
from ce_autoconf.demo import VpnLab
from dhcp_server.service import merge_secrets
from dhcp_server.store import Snapshot

pytest_plugins = ["netns"]  # the lab fixture

MINIMAL = """\
[server]
server_id = "10.66.0.1"

[[subnets]]
network = "10.66.0.0/24"
interface = "eth0"
pools = ["10.66.0.100-10.66.0.199"]

[store]
path = "store.sqlite"
"""


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_secrets_file_wins_for_the_ids_it_names_and_the_store_keeps_the_rest() -> None:
    snapshot = Snapshot(secrets={1: b"a" * 16, 2: b"b" * 16, 3: b"c" * 16})
    merged = merge_secrets(snapshot, {2: b"B" * 16, 3: b"c" * 16, 4: b"d" * 16})
    assert snapshot.secrets == {1: b"a" * 16, 2: b"B" * 16, 3: b"c" * 16, 4: b"d" * 16}
    assert (merged.from_file, merged.from_store, merged.overridden) == (3, 1, (2,))
    assert "BBBB" not in repr(merged)


def test_check_reads_the_secrets_file_and_the_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        MINIMAL
        + '[secrets]\nfile = "secrets.toml"\n[api]\nlisten = "127.0.0.1:8067"\ntoken_file = "api.token"\n'
    )
    key = "00112233445566778899aabbccddeeff"
    secrets = _private(tmp_path / "secrets.toml", f'[[key]]\nsecret_id = 7\nkey = "{key}"\n')
    token = _private(tmp_path / "api.token", "t" * 32 + "\n")
    assert main(["server", "run", "--config", str(config), "--check"]) == 0
    assert "valid" in capsys.readouterr().out

    secrets.chmod(0o644)
    assert main(["server", "run", "--config", str(config), "--check"]) == 2
    err = capsys.readouterr().err
    assert "0644" in err
    assert key not in err
    secrets.chmod(0o600)

    token.chmod(0o640)
    assert main(["server", "run", "--config", str(config), "--check"]) == 2
    assert "api.token" in capsys.readouterr().err
    token.chmod(0o600)

    config.write_text(MINIMAL.replace("[store]", "[store]\nbakend = 1"))
    assert main(["server", "run", "--config", str(config), "--check"]) == 2
    assert "store.bakend: unknown key" in capsys.readouterr().err


def _get(url: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(body) if "json" in kind else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_server_run_serves_dhcp_and_the_api_then_stops_on_sigterm(lab: Lab) -> None:
    vpn = VpnLab(lab, secrets_file=True)
    # ce1's key is provisioned by file only; the CE is then created through the API without one.
    vpn.write_secrets("ce1")
    server = vpn.start_server()
    token = vpn.token_file.read_text().strip()
    vpn.manage(*vpn.vpn_add_argv())
    ce1 = vpn.ces["ce1"]
    vpn.manage("ce", "add", "ce1", "--hw", ce1.mac, "--secret-id", str(ce1.secret_id), "--vpn", "100")
    vpn.start_client("ce1")
    address = vpn.wait_bound("ce1")

    # The API, from inside the server's namespace (it listens on that namespace's loopback).
    results: dict[str, tuple[int, Any]] = {}

    def ask() -> None:
        api = "http://127.0.0.1:8067"
        results["status"] = _get(f"{api}/v1/status", token)
        results["leases"] = _get(f"{api}/v1/leases?state=bound", token)
        results["ces"] = _get(f"{api}/v1/ces/ce1", token)
        results["refused"] = _get(f"{api}/v1/status", "x" * 32)
        results["metrics"] = _get(f"{api}/metrics", None)

    with vpn.server_ns.entered():
        ask()
    status, body = results["status"]
    assert status == 200
    assert body["server_id"] == "10.66.0.1"
    assert body["counters"]["received:DHCPREQUEST"] >= 1
    assert body["counters"].get("dropped:auth_failed", 0) == 0
    status, body = results["leases"]
    assert status == 200
    assert [(lease["address"], lease["ce"]) for lease in body["leases"]] == [(str(address), "ce1")]
    status, body = results["ces"]
    assert (status, body["has_key"], body["address"]) == (200, True, str(address))
    assert results["refused"][0] == 401
    status, text = results["metrics"]
    assert status == 200
    assert 'ceautoconf_messages_sent_total{type="DHCPACK"}' in text
    assert "ceautoconf_store_commit_seconds_count" in text  # the store is wrapped in TimedStore

    events = vpn.server_events()
    loaded = next(e for e in events if e["event"] == "secrets.loaded")
    assert loaded["fields"] == {"from_file": 1, "from_store": 0, "overridden": []}
    assert all(set(e) >= {"ts", "level", "logger", "event", "fields"} for e in events)
    assert ce1.key_file.read_text().strip() not in server.log()

    server.signal(signal.SIGTERM)
    wait_for(lambda: not server.running(), 10, what="the server to stop on SIGTERM")
    assert server.popen.returncode == 0
    assert vpn.server_events()[-1]["event"] == "server.stopped"
    # The lease it handed out is durable: a second start finds it (and the API still answers).
    vpn.start_server()
    with vpn.server_ns.entered():
        status, body = _get("http://127.0.0.1:8067/v1/leases?state=bound", token)
    assert status == 200
    assert [lease["address"] for lease in body["leases"]] == [str(address)]


def test_a_missing_interface_is_exit_status_1_with_a_json_line(lab: Lab, tmp_path: Path) -> None:
    ns = lab.namespace("srv")  # no eth0 in it
    config = tmp_path / "server.toml"
    config.write_text(MINIMAL)
    done = ns.run(sys.executable, "-m", "ce_autoconf", "server", "run", "--config", str(config), check=False)
    assert done.returncode == 1, done.stderr
    last = json.loads(done.stderr.strip().splitlines()[-1])
    assert last["event"] == "server.failed"
