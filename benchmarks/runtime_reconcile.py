"""Reconcile 10/100/500 peers (create, then tear down) against ``ip -batch`` doing the same, in one VM run.

    .venv/bin/python benchmarks/runtime_reconcile.py [--sizes 10,100,500] [--repeat 2]

On the host this boots the micro-VM (tests/vm/microvm.py) and runs itself inside with ``--inside``.
Per size, in a fresh namespace each: our reconciler (dump, plan, apply; keys derived; window of 4
inbound SAs + 1 outbound, 2 policies, 1 ipip link with MTU and alias, per peer) from empty to N peers
and back to none; then one ``ip -batch`` file with the same kernel operations, and its teardown.
Both sides run ``--repeat`` times, alternating; each side's best run is reported (the machine is
shared: the best is the one least disturbed), with create and teardown apart. The ratio is ours / ip.
A 2-peer warm-up round (module loading) is not reported. The host's load average is printed
before and after: a loaded host makes both sides slower, not always by the same factor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECRET = bytes(range(32))


def _peers(n: int) -> list[IPv4Address]:
    return [IPv4Address(int(IPv4Address("10.200.0.0")) + 1 + i) for i in range(n)]


def _inside_one(n: int, state_dir: Path) -> tuple[float, float, float, float]:
    """Run in the namespace: create n tunnels, then remove them.

    Seconds of each round, then of both rounds' dumps (``read``) and kernel changes (``apply_all``):
    the rest is planning and keying.
    """
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
    spent = {"read": 0.0, "apply_all": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[name] += time.perf_counter() - start

        return run

    with NetlinkKernel() as kernel:
        kernel.read = timed("read", kernel.read)  # type: ignore[method-assign]
        kernel.apply_all = timed("apply_all", kernel.apply_all)  # type: ignore[method-assign]
        rec = Reconciler(kernel, StaticKeying({7: SECRET}, EpochFile(state_dir / "epochs.json")), NoHooks())
        start = time.perf_counter()
        up = rec.reconcile(full, 0)
        middle = time.perf_counter()
        down = rec.reconcile(empty, 1)
        end = time.perf_counter()
    if up.failed or down.failed:
        raise RuntimeError(f"failures: {up.failed[:3]} {down.failed[:3]}")
    assert len(up.applied) == n * 8, len(up.applied)
    assert len(down.applied) == n * 8, len(down.applied)
    return middle - start, end - middle, spent["read"], spent["apply_all"]


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


def _ours(ns: str, n: int) -> tuple[float, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--one", str(n), "--state", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
    return tuple(float(x) for x in out.stdout.strip().splitlines()[-1].split())


def _theirs(ns: str, n: int) -> tuple[float, float]:
    up, down = _batch(n)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "up").write_text(up)
        (Path(tmp) / "down").write_text(down)
        start = time.perf_counter()
        subprocess.run(["ip", "-n", ns, "-batch", str(Path(tmp) / "up")], check=True)
        middle = time.perf_counter()
        subprocess.run(["ip", "-n", ns, "-batch", str(Path(tmp) / "down")], check=True)
        return middle - start, time.perf_counter() - middle


def _inside(sizes: list[int], repeat: int) -> None:
    print(
        f"{'peers':>6} {'ours up':>8} {'down':>7} {'ip up':>7} {'down':>7} "
        f"{'ours s':>7} {'ip s':>7} {'ratio':>6} {'ours ms/peer':>13} {'ip ms/peer':>11}"
    )
    # The first round of each loads kernel modules (ipip, esp4, gcm, ...) through the VM's modprobe
    # wrapper: a warm-up round of 2 peers that is not reported.
    where = [f"{'peers':>6} {'dumps':>7} {'changes':>8} {'plan+keying':>13}   (ours, seconds, both rounds)"]
    for i, n in enumerate([2, *sizes]):
        ns = f"bench{i}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        ours: list[tuple[float, ...]] = []
        theirs: list[tuple[float, float]] = []
        for _ in range(1 if i == 0 else repeat):
            ours.append(_ours(ns, n))
            theirs.append(_theirs(ns, n))
        subprocess.run(["ip", "netns", "del", ns], check=True)
        if i == 0:
            continue
        (o_up, o_down, read, apply), (t_up, t_down) = (
            min(ours, key=lambda x: x[0] + x[1]),
            min(theirs, key=sum),
        )
        o, t = o_up + o_down, t_up + t_down
        where.append(f"{n:>6} {read:>7.2f} {apply:>8.2f} {o - read - apply:>13.2f}")
        print(
            f"{n:>6} {o_up:>8.2f} {o_down:>7.2f} {t_up:>7.2f} {t_down:>7.2f} {o:>7.2f} {t:>7.2f} "
            f"{o / t:>6.2f} {o / n * 1e3:>13.1f} {t / n * 1e3:>11.1f}",
            flush=True,
        )
    print("\n".join(where))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--inside", action="store_true")
    parser.add_argument("--one", type=int)
    parser.add_argument("--state", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if (args.one is not None or args.inside) and os.environ.get("CE_VM") != "1":
        parser.error("--inside and --one change the kernel's state: only inside the micro-VM")
    if args.one is not None:
        print(*_inside_one(args.one, args.state))
        return 0
    if args.inside:
        _inside(sizes, args.repeat)
        return 0
    sys.path.insert(0, str(REPO / "tests" / "vm"))
    import microvm  # noqa: PLC0415

    py, me = '"$CE_REPO/.venv/bin/python"', '"$CE_REPO/benchmarks/runtime_reconcile.py"'
    script = f"{py} {me} --inside --sizes {args.sizes} --repeat {args.repeat}\n"
    print("host load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    result = microvm.run_in_vm(script, timeout=2400)
    print(result.stdout, end="")
    print("host load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if result.returncode != 0:
        print(result.explain(), file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
