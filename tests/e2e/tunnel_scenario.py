"""Runs ``ce_autoconf.tunnel_demo`` in one micro-VM boot and requires each of its checks: the shared
body of the static and the IKE tunnel scenarios."""

from __future__ import annotations

import time

import microvm


def run_tunnel_demo(arguments: str, checks: tuple[str, ...]) -> None:
    """The demo prints ``CHECK <name> ok|FAIL`` per check and ``SCENARIO PASSED`` at the end."""
    started = time.monotonic()
    result = microvm.run_in_vm(
        f'"$CE_REPO/.venv/bin/python" -m ce_autoconf.tunnel_demo {arguments}'.rstrip(),
        timeout=1200,
        memory_mb=1536,
    )
    print(f"VM run: {time.monotonic() - started:.1f} s\n{result.stdout}")
    why = result.explain()
    for name in checks:
        assert f"CHECK {name} ok" in result.stdout, f"{name}\n{why}"
    assert "SCENARIO PASSED" in result.stdout, why
    assert result.returncode == 0, why
