"""Reconcile 10/100/500 peers (create, then tear down) against ``ip -batch`` doing the same, in one VM run.

    .venv/bin/python benchmarks/runtime_reconcile.py [--sizes 10,100,500]

On the host this boots the micro-VM (tests/vm/microvm.py) and runs itself inside with ``--inside``.
Per size, in a fresh namespace each: our reconciler (dump, plan, apply; keys derived; window of 4
inbound SAs + 1 outbound, 2 policies, 1 ipip link with MTU and alias, per peer) from empty to N peers
and back to none; then one ``ip -batch`` file with the same kernel operations, and its teardown.
The ratio is ours / ip. A 2-peer warm-up round (module loading) is not reported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRET = bytes(range(32))


def _peers(n: int) -> list[IPv4Address]:
    return [IPv4Address(int(IPv4Address("10.200.0.0")) + 1 + i) for i in range(n)]


def _inside_one(n: int, state_dir: Path) -> float:
    """Run in the namespace: create n tunnels, then remove them; seconds for both rounds."""
    sys.path.insert(0, str(REPO))
    from ce_runtime.kernel import NetlinkKernel  # noqa: PLC0415
    from ce_runtime.keying import EpochFile, StaticKeying  # noqa: PLC0415
    from ce_runtime.runtime import Reconciler, RuntimeConfig, VpnConfig  # noqa: PLC0415

    class NoHooks:
        def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
            pass

    local = IPv4Address("192.0.2.1")
    full = RuntimeConfig(local, (VpnConfig(7, frozenset(_peers(n))),))
    empty = RuntimeConfig(local, (VpnConfig(7, frozenset()),))
    with NetlinkKernel() as kernel:
        rec = Reconciler(kernel, StaticKeying({7: SECRET}, EpochFile(state_dir / "epochs.json")), NoHooks())
        start = time.perf_counter()
        up = rec.reconcile(full, 0)
        down = rec.reconcile(empty, 1)
        elapsed = time.perf_counter() - start
    if up.failed or down.failed:
        raise RuntimeError(f"failures: {up.failed[:3]} {down.failed[:3]}")
    assert len(up.applied) == n * 8, len(up.applied)
    return elapsed


def _batch(n: int) -> tuple[str, str]:
    sys.path.insert(0, str(REPO))
    from ce_runtime.keying import derive  # noqa: PLC0415
    from ce_runtime.runtime import link_name, tunnel_mtu  # noqa: PLC0415

    local = IPv4Address("192.0.2.1")
    reqid = 0xCE000007
    up: list[str] = []
    down: list[str] = []
    aead = "aead rfc4106(gcm(aes)) 0x{} 128"
    for peer in _peers(n):
        name = link_name(peer)
        sas = [(local, peer, 0)] + [(peer, local, e) for e in range(4)]
        for src, dst, epoch in sas:
            key, spi = derive(SECRET, 7, src, dst, epoch)
            up.append(
                f"xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid {reqid} mode transport "
                f"replay-window 32 {aead.format(key.hex())} sel src {src}/32 dst {dst}/32"
            )
            down.append(f"xfrm state delete src {src} dst {dst} proto esp spi {spi:#x}")
        for src, dst, d in ((local, peer, "out"), (peer, local, "in")):
            up.append(
                f"xfrm policy add src {src}/32 dst {dst}/32 proto 4 dir {d} priority 52736 "
                f"tmpl proto esp mode transport reqid {reqid}"
            )
            down.insert(0, f"xfrm policy delete src {src}/32 dst {dst}/32 proto 4 dir {d}")
        up.append(f"link add {name} type ipip local {local} remote {peer} ttl 64")
        up.append(f"link set {name} mtu {tunnel_mtu(1500)} alias 'ce-autoconf vpn=7 peer={peer}' up")
        down.insert(0, f"link del {name}")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def _inside(sizes: list[int]) -> None:
    print(f"{'peers':>6} {'ours s':>8} {'ip -batch s':>12} {'ratio':>6} {'ours us/peer':>13}")
    # The first round of each loads kernel modules (ipip, esp4, gcm, ...) through the VM's modprobe
    # wrapper: a warm-up round of 2 peers that is not reported.
    for i, n in enumerate([2, *sizes]):
        ns = f"bench{i}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, __file__, "--one", str(n), "--state", tmp],
                check=True,
                capture_output=True,
                text=True,
            )
            ours = float(out.stdout.strip().splitlines()[-1])
            up, down = _batch(n)
            (Path(tmp) / "up").write_text(up)
            (Path(tmp) / "down").write_text(down)
            start = time.perf_counter()
            subprocess.run(["ip", "-n", ns, "-batch", str(Path(tmp) / "up")], check=True)
            subprocess.run(["ip", "-n", ns, "-batch", str(Path(tmp) / "down")], check=True)
            theirs = time.perf_counter() - start
        subprocess.run(["ip", "netns", "del", ns], check=True)
        if i == 0:
            continue
        print(
            f"{n:>6} {ours:>8.3f} {theirs:>12.3f} {ours / theirs:>6.2f} {ours / n * 1e6:>13.0f}", flush=True
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--inside", action="store_true")
    parser.add_argument("--one", type=int)
    parser.add_argument("--state", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one is not None:
        print(_inside_one(args.one, args.state))
        return 0
    if args.inside:
        _inside(sizes)
        return 0
    sys.path.insert(0, str(REPO / "tests" / "vm"))
    import microvm  # noqa: PLC0415

    py, me = '"$CE_REPO/.venv/bin/python"', '"$CE_REPO/benchmarks/runtime_reconcile.py"'
    script = f"{py} {me} --inside --sizes {args.sizes}\n"
    result = microvm.run_in_vm(script, timeout=1200)
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.explain(), file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
