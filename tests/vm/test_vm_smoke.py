"""The micro-VM boots Debian's kernel, which has what this host's kernel lacks: ipip and ESP."""

from __future__ import annotations

import microvm

SMOKE = r"""
set -e
uname -r
ip link add cesmoke0 type ipip local 192.0.2.1 remote 192.0.2.2
ip -d -o link show cesmoke0 | grep -q 'ipip'
echo IPIP_OK
ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 reqid 5 mode transport \
    aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128
ip xfrm state list | grep -q 'rfc4106(gcm(aes))'
echo ESP_OK
"$CE_REPO/.venv/bin/python" -c 'import pyroute2, ce_runtime; print("VENV_OK")'
"""


def test_vm_has_ipip_esp_and_the_venv() -> None:
    microvm.require_vm()
    result = microvm.run_in_vm(SMOKE, timeout=240)
    assert result.returncode == 0, result.explain()
    for marker in ("IPIP_OK", "ESP_OK", "VENV_OK"):
        assert marker in result.stdout, result.explain()
