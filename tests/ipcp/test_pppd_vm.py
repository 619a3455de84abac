"""Our PPP against pppd 2.4.9 for real: one micro-VM boot (Debian's kernel has /dev/ppp), two scenarios.

The guest side is ``pppd_peer.py`` (read it for what each scenario does); this file boots the VM,
prepares what pppd needs (ppp_async loaded, the host's /etc/ppp hidden under a tmpfs, /var/run ->
/run), and checks what came back: our events, pppd's debug log and exit status, and pppd's own
``record`` capture, decoded here by our code and by tshark.

``CE_PPP_SAVE_VECTORS=1`` copies the captures and logs of a passing run into
``vectors/pppd-2.4.9-vm/`` (``test_ppp_vm_vectors.py`` checks the stored ones byte for byte).

Skips when qemu or pppd is missing, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import microvm
import pytest
from pppdump import compare_with_tshark, decode_line_frame, line_frames

from ipcp.frame import Protocol
from ipcp.fsm import State

HERE = Path(__file__).parent
VECTORS = HERE / "vectors" / "pppd-2.4.9-vm"
LCP, IPCP = f"{Protocol.LCP:#x}", f"{Protocol.IPCP:#x}"

SCRIPT = r"""
set -u
modprobe -d "$CE_VM_KERNEL_TREE" -a ppp_generic ppp_async || echo "modprobe ppp failed" >&2
mount -t tmpfs -o mode=755 tmpfs /etc/ppp      # the host's options: auth, crtscts, lock, ip-up scripts
rmdir /var/run 2>/dev/null; ln -sfn /run /var/run
exec "$CE_REPO/.venv/bin/python" "$CE_REPO/tests/ipcp/pppd_peer.py" "$PWD"
"""


def _require_pppd() -> None:
    if Path("/usr/sbin/pppd").exists():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("pppd is not installed under CI (./run test installs the ppp package)")
    pytest.skip("pppd is not installed (Debian package ppp; ./run test installs it)")


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    microvm.require_vm()
    _require_pppd()
    result = microvm.run_in_vm(SCRIPT, timeout=400)
    assert result.returncode == 0, result.explain()
    out = {}
    for line in result.stdout.splitlines():
        run = json.loads(line)
        out[run["scenario"]] = run
    assert set(out) == {"ce_vs_pppd", "pppd_vs_nas"}, result.explain()
    print(f"VM run {result.seconds:.1f}s; scenarios {[(k, v['seconds']) for k, v in out.items()]}")
    if os.environ.get("CE_PPP_SAVE_VECTORS") == "1":
        VECTORS.mkdir(parents=True, exist_ok=True)
        for name, run in out.items():
            (VECTORS / f"{name}.pppdump").write_bytes(base64.b64decode(run["record"]))
            (VECTORS / f"{name}.log").write_text(run["log"])
    return out


def _events(run: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in run["events"] if e["event"] == kind]


def _names(run: dict[str, Any]) -> list[str]:
    return [e["event"] for e in run["events"]]


def test_our_ce_against_pppd_as_nas(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["ce_vs_pppd"]
    why = json.dumps({k: v for k, v in run.items() if k != "record"}, indent=1)
    assert run["error"] is None, why
    log = run["log"]
    # LCP and IPCP open; the address and name servers arrive by Nak.
    assert "sent [IPCP ConfNak id=0x2 <addr 100.64.0.2> <ms-dns1 192.0.2.53> <ms-dns2 192.0.2.54>]" in log, (
        why
    )
    assert "local  IP address 100.64.0.1" in log, why
    assert "remote IP address 100.64.0.2" in log, why
    assert _events(run, "AddressLearned") == [
        {"event": "AddressLearned", "local": "100.64.0.2", "peer": "100.64.0.1"}
    ], why
    assert _events(run, "DnsLearned") == [
        {"event": "DnsLearned", "primary": "192.0.2.53", "secondary": "192.0.2.54"}
    ], why
    # pppd rejects VPN-IP-Addresses byte for byte; our CE carries on without it.
    assert "sent [IPCP ConfRej id=0x1 < c8 08 00 01 00 00 00 00>]" in log, why
    assert _events(run, "VpnOptionRejected") == [{"event": "VpnOptionRejected"}], why
    assert _events(run, "VpnPeersLearned") == [], why
    # An IP datagram crosses the link both ways: the guest kernel answered our echo request on ppp0.
    assert run["echo_replies"], why
    assert run["echo_replies"][0][:2] == ["100.64.0.1", "100.64.0.2"], why
    # Clean terminate from our side: LCP Terminate-Request/Ack, nothing after it.
    assert "LCP terminated by peer" in log, why
    assert "Discarded non-LCP packet" not in log, why
    assert _names(run)[-1] == "LayerFinished", why
    assert run["finished"], why
    assert run["lcp_state"] == State.CLOSED.name, why
    assert run["pppd_rc"] == 16, why  # "Modem hangup": pppd's status even after a clean terminate
    assert run["counters"]["malformed_frames"] == 0, why


def test_pppd_as_client_of_our_nas(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["pppd_vs_nas"]
    why = json.dumps({k: v for k, v in run.items() if k != "record"}, indent=1)
    assert run["error"] is None, why
    log = run["log"]
    # pppd asks 0.0.0.0 (noipdefault) and gets its address and DNS from our NAS.
    assert "local  IP address 100.64.0.2" in log, why
    assert "remote IP address 100.64.0.1" in log, why
    assert "primary   DNS address 192.0.2.53" in log, why
    assert "secondary DNS address 192.0.2.54" in log, why
    # Our NAS rejects VJ compression; it never asks pppd for VPN-IP-Addresses (only the CE asks).
    assert "rcvd [IPCP ConfRej id=0x1 <compress VJ 0f 01>]" in log, why
    assert "c8 " not in log.split("local  IP address")[0], why
    assert _events(run, "PeerConfigured") == [
        {"event": "PeerConfigured", "address": "100.64.0.2", "vpns": []}
    ], why
    # The guest kernel pinged our NAS's address through ppp0; our NAS answered the echo at the IP level.
    assert run["kernel_ping"][0] == 0, why
    assert run["echo_answered"] >= 1, why
    assert "LCP terminated by peer" in log, why
    assert run["finished"], why
    assert run["pppd_rc"] == 16, why


@pytest.mark.parametrize("scenario", ["ce_vs_pppd", "pppd_vs_nas"])
def test_live_capture_decodes_like_tshark(
    runs: dict[str, dict[str, Any]], scenario: str, tmp_path: Path
) -> None:
    """pppd's record of this run: our decoder and tshark agree frame by frame (see test_ppp_vm_vectors)."""
    data = base64.b64decode(runs[scenario]["record"])
    frames = line_frames(data)
    assert len(frames) >= 15
    decoded = [decode_line_frame(f) for f in frames]
    if shutil.which("tshark") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("tshark is not installed under CI")
        pytest.skip("tshark is not installed")
    path = tmp_path / f"{scenario}.pppdump"
    path.write_bytes(data)
    compare_with_tshark(path, decoded)
