"""Where a reconcile's time goes, on this host: pyroute2's path and ce_runtime.wire's, side by side.

    .venv/bin/python benchmarks/runtime_messages.py [--n 1000] [--peers 500]

Needs root (a scratch network namespace). This host's kernel has XFRM policies but neither ESP
nor ipip, so the kernel round trips are policy add/delete; SA and link messages are timed for
encoding and decoding only. Printed per message (µs): encode with the ``nlmsg`` classes and with
the precompiled structs; add then delete one at a time through pyroute2 (``XfrmSocket``) and in
batches (``NetlinkKernel.apply_all``); a dump decoded by the ``nlmsg`` classes and by the lean
decoders. Then the pure parts for ``--peers`` peers: desired state (key derivation) and planning.
The full reconcile against ``ip -batch`` on a real kernel: benchmarks/runtime_reconcile.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ce_runtime import wire, xfrm  # noqa: E402
from ce_runtime.kernel import NetlinkKernel  # noqa: E402
from ce_runtime.keying import EpochFile, StaticKeying  # noqa: E402
from ce_runtime.model import AddPolicy, DelPolicy, KernelState, LinkSpec, Ownership, plan  # noqa: E402
from ce_runtime.runtime import RuntimeConfig, VpnConfig, desired_state  # noqa: E402

A = IPv4Address


def _per(n: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e6


def _each(fn: Callable[[xfrm.PolicySpec], None], items: list[xfrm.PolicySpec]) -> None:
    for item in items:
        fn(item)


def _row(what: str, theirs: float, ours: float) -> None:
    print(f"{what:<34} {theirs:>10.1f} {ours:>10.1f} {theirs / ours:>7.1f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=500)
    args = parser.parse_args()
    n = args.n
    local = A("192.0.2.1")
    sa = xfrm.SaSpec(local, A("192.0.2.2"), 0x80000101, 0xCE000007, bytes(range(36)))
    policies = [
        xfrm.PolicySpec(local, A(int(A("10.0.0.0")) + 1 + i), xfrm.Direction.OUT, 0xCE000007, 0xCE00)
        for i in range(n)
    ]
    link = LinkSpec("cec0000202", local, A("192.0.2.2"), 1446, "ce-autoconf vpn=7 peer=192.0.2.2")
    print(f"{'per message (µs)':<34} {'pyroute2':>10} {'wire':>10} {'gain':>8}")
    _row(
        "encode NEWSA",
        _per(n, lambda: [xfrm.encode_sa(sa) for _ in range(n)]),
        _per(n, lambda: [wire.new_sa(sa, 1) for _ in range(n)]),
    )
    _row(
        "encode NEWPOLICY",
        _per(n, lambda: [xfrm.encode_policy(p) for p in policies]),
        _per(n, lambda: [wire.new_policy(p, 1) for p in policies]),
    )
    body = bytes(xfrm.encode_sa(sa).data[16:])
    _row(
        "decode NEWSA",
        _per(n, lambda: [xfrm.decode_sa(body) for _ in range(n)]),
        _per(n, lambda: [wire.decode_sa(body) for _ in range(n)]),
    )
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: PLC0415

    def pyroute2_link() -> object:
        msg = ifinfmsg(wire.new_link(link, 1))
        msg.decode()
        return msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_IPIP_LOCAL")

    link_body = wire.new_link(link, 1)[16:]
    _row(
        "decode RTM_NEWLINK (ipip)",
        _per(n, lambda: [pyroute2_link() for _ in range(n)]),
        _per(n, lambda: [wire.decode_link(link_body) for _ in range(n)]),
    )

    ns = f"rtmsg{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        channel = wire.NetlinkChannel(wire.NETLINK_XFRM, ns)

        def lean_dump() -> list[xfrm.PolicySpec | None]:
            return [
                wire.decode_policy(body) for _, body in channel.dump(xfrm.MsgType.GETPOLICY, wire.POLICY_DUMP)
            ]

        with xfrm.XfrmSocket(netns=ns) as sock, NetlinkKernel(netns=ns) as kernel:
            add_one = _per(n, lambda: _each(sock.add_policy, policies))
            dump_slow = _per(n, sock.dump_policies)
            dump_fast = _per(n, lean_dump)
            del_one = _per(n, lambda: _each(sock.delete_policy, policies))
            add_batch = _per(n, lambda: kernel.apply_all([AddPolicy(p) for p in policies]))
            del_batch = _per(n, lambda: kernel.apply_all([DelPolicy(p) for p in policies]))
        _row("add policy (encode + request)", add_one, add_batch)
        _row("delete policy (encode + request)", del_one, del_batch)
        _row(f"dump + decode ({n} policies)", dump_slow, dump_fast)
        channel.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)

    peers = [A(int(A("10.200.0.0")) + 1 + i) for i in range(args.peers)]
    with tempfile.TemporaryDirectory() as tmp:
        keying = StaticKeying({7: bytes(range(32))}, EpochFile(Path(tmp) / "epochs.json"))
        config = RuntimeConfig(local, (VpnConfig(7, frozenset(peers)),))
        start = time.perf_counter()
        desired = desired_state(config, keying, [], Ownership())
        derive = time.perf_counter() - start
        start = time.perf_counter()
        ops = plan(desired, KernelState(), Ownership())
        build = time.perf_counter() - start
        start = time.perf_counter()
        plan(KernelState(), desired, Ownership())
        teardown = time.perf_counter() - start
    print(
        f"{args.peers} peers: desired state {derive * 1e3:.0f} ms, plan up {build * 1e3:.0f} ms "
        f"({len(ops)} ops), plan down {teardown * 1e3:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
