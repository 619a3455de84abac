"""XFRM messages: layout against struct.pack of linux/xfrm.h, round trips, host kernel for policies."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import lab, scratch_netns  # noqa: F401 (fixtures)
from pyroute2.netlink.exceptions import NetlinkError

from ce_runtime import xfrm

A = IPv4Address


def _kernel_sa_body(src: str, dst: str, spi: int, reqid: int, key: bytes) -> bytes:
    """xfrm_usersa_info + XFRMA_ALG_AEAD, packed independently with C alignment ('@' native)."""
    sel = struct.pack("@16s16sHHHHHBBBxiI", A(dst).packed, A(src).packed, 0, 0, 0, 0, 2, 32, 32, 0, 0, 0)
    xid = struct.pack("@16s4sB3x", A(dst).packed, spi.to_bytes(4, "big"), 50)
    inf = (1 << 64) - 1
    lft = struct.pack("@8Q", inf, inf, inf, inf, 0, 0, 0, 0)
    info = sel + xid + A(src).packed + bytes(12) + lft + bytes(32) + bytes(12)
    info += struct.pack("@IIHBBB7x", 0, reqid, 2, 0, 32, 0)
    assert len(info) == 224
    aead = struct.pack("@64sII", b"rfc4106(gcm(aes))", len(key) * 8, 128) + key
    return info + struct.pack("@HH", 4 + len(aead), 18) + aead


def test_sa_encoding_matches_the_c_layout() -> None:
    key = bytes(range(36))
    sa = xfrm.SaSpec(A("192.0.2.1"), A("192.0.2.2"), 0xCE000101, 0xCE000007, key)
    body = bytes(xfrm.encode_sa(sa).data[16:])
    assert body == _kernel_sa_body("192.0.2.1", "192.0.2.2", 0xCE000101, 0xCE000007, key)
    assert xfrm.decode_sa(body) == sa


def test_key_is_not_in_repr() -> None:
    sa = xfrm.SaSpec(A("192.0.2.1"), A("192.0.2.2"), 0x1000, 1, b"\x42" * 20)
    assert "42" not in repr(sa).replace("192", "")
    assert "key" not in repr(sa)


addresses = st.integers(0, 2**32 - 1).map(A)


@given(
    addresses,
    addresses,
    st.integers(0x100, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([20, 28, 36]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_sa_round_trip(
    src: A, dst: A, spi: int, reqid: int, key: bytes, mark: tuple[int, int] | None
) -> None:
    sa = xfrm.SaSpec(src, dst, spi, reqid, key, mark=mark)
    assert xfrm.decode_sa(bytes(xfrm.encode_sa(sa).data[16:])) == sa


@given(
    addresses,
    addresses,
    st.sampled_from(list(xfrm.Direction)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_policy_round_trip(
    src: A, dst: A, direction: xfrm.Direction, reqid: int, prio: int, mark: tuple[int, int] | None
) -> None:
    policy = xfrm.PolicySpec(src, dst, direction, reqid, prio, mark=mark)
    assert xfrm.decode_policy(bytes(xfrm.encode_policy(policy).data[16:])) == policy


def test_template_allows_all_algorithms() -> None:
    """Like iproute2: all-ones algorithm masks, else the kernel rejects AEAD SAs on input."""
    policy = xfrm.PolicySpec(A("10.0.0.1"), A("10.0.0.2"), xfrm.Direction.IN, 0xCE000007, 1)
    body = bytes(xfrm.encode_policy(policy).data[16:])
    tmpl = body[168 + 4 : 168 + 4 + 64]
    assert struct.unpack_from("@III", tmpl, 52) == (0xFFFFFFFF,) * 3
    assert struct.unpack_from("@I", tmpl, 44) == (0xCE000007,)


def test_struct_sizes() -> None:
    sizes = {
        xfrm.xfrm_usersa_info: 224,
        xfrm.xfrm_usersa_id: 24,
        xfrm.xfrm_userpolicy_info: 168,
        xfrm.xfrm_userpolicy_id: 64,
    }
    for cls, size in sizes.items():
        assert sum(struct.calcsize(fmt) for _, fmt in cls.fields) == size, cls.__name__


def test_policies_against_the_host_kernel(scratch_netns: str) -> None:  # noqa: F811 (the fixture)
    """This host kernel has XFRM_USER (policies) though not ESP: `ip` is the independent oracle."""
    ours = xfrm.PolicySpec(A("10.0.0.1"), A("10.0.0.2"), xfrm.Direction.OUT, 0xCE000007, 0xCE00)
    marked = xfrm.PolicySpec(
        A("10.0.0.2"), A("10.0.0.1"), xfrm.Direction.IN, 0xCE000007, 0xCE00, mark=(7, 0xFF)
    )
    with xfrm.XfrmSocket(netns=scratch_netns) as sock:
        sock.add_policy(ours)
        sock.add_policy(marked)
        shown = subprocess.run(
            ["ip", "-n", scratch_netns, "xfrm", "policy"], capture_output=True, text=True, check=True
        ).stdout
        assert "src 10.0.0.1/32 dst 10.0.0.2/32 proto ipencap" in shown
        assert "dir out priority 52736" in shown
        assert "mark 0x7/0xff" in shown
        assert "proto esp reqid 3456106503 mode transport" in shown
        subprocess.run(
            ["ip", "-n", scratch_netns, "xfrm", "policy", "add", "src", "10.9.0.1/32", "dst", "10.9.0.2/32",
             "proto", "4", "dir", "in", "priority", "7",
             "tmpl", "proto", "esp", "mode", "transport", "reqid", "9"],
            check=True,
        )  # fmt: skip
        dumped = set(sock.dump_policies())
        foreign = xfrm.PolicySpec(A("10.9.0.1"), A("10.9.0.2"), xfrm.Direction.IN, 9, 7)
        assert dumped == {ours, marked, foreign}
        sock.delete_policy(ours)
        sock.delete_policy(marked)
        assert set(sock.dump_policies()) == {foreign}


_SEND_IPIP = """
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
try:
    s.sendto(bytes(20), (sys.argv[1], 0))
    print("sent")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def _send_ipip(netns: str, dst: str) -> str:
    """What a raw IP-in-IP datagram to ``dst`` meets in ``netns``: "sent" or the errno's name."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _SEND_IPIP, dst],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


def test_guards_block_unprotected_ipip_and_yield_to_a_protecting_policy(
    scratch_netns: str,  # noqa: F811 (the fixture)
) -> None:
    """The fail-closed guard on this host's kernel: ipip to the peer is refused (EPERM) while only
    the guard is there; charon's policy for the pair (higher precedence) coexists with it and
    wins; once that policy is gone the guard blocks again. The output route lookup is where
    XFRM decides, so a raw socket shows it without ipip or ESP in the kernel."""
    ns, local, peer = scratch_netns, A("10.0.0.1"), A("10.0.0.2")
    # A veth pair inside the namespace: loopback routes never see XFRM (lo has disable_xfrm).
    for command in (
        ["link", "add", "pv0", "type", "veth", "peer", "name", "pv1"],
        ["addr", "add", "10.0.0.1/24", "dev", "pv0"],
        ["link", "set", "pv1", "up"],
        ["link", "set", "pv0", "up"],
    ):
        subprocess.run(["ip", "-n", ns, *command], check=True)
    assert _send_ipip(ns, str(peer)) == "sent"
    guards = [xfrm.PolicySpec.guard(peer, d, 0xCFFF) for d in (xfrm.Direction.OUT, xfrm.Direction.IN)]
    charon = xfrm.PolicySpec(local, peer, xfrm.Direction.OUT, 0xCF000001, 0xCF00)
    with xfrm.XfrmSocket(netns=ns) as sock:
        for guard in guards:
            sock.add_policy(guard)
        assert _send_ipip(ns, str(peer)) == "EPERM"
        assert _send_ipip(ns, "10.0.0.3") == "sent"  # only the guarded peer
        sock.add_policy(charon)
        assert set(sock.dump_policies()) == {*guards, charon}  # both there: neither replaced the other
        assert _send_ipip(ns, str(peer)) == "sent"  # charon's wins (no SA yet: the larval blackhole)
        sock.delete_policy(charon)
        assert _send_ipip(ns, str(peer)) == "EPERM"
        # Why the guard's local side is a wildcard: with the protecting policy's own selector it
        # would be the same policy to the kernel (priority is not part of the key).
        sock.add_policy(charon)
        same = xfrm.PolicySpec(local, peer, xfrm.Direction.OUT, 0, 0xCFFF, action=xfrm.Action.BLOCK)
        with pytest.raises(NetlinkError) as refused:
            sock.add_policy(same)
        assert refused.value.code == errno.EEXIST
    shown = subprocess.run(
        ["ip", "-n", ns, "xfrm", "policy"], capture_output=True, text=True, check=True
    ).stdout
    assert "src 0.0.0.0/0 dst 10.0.0.2/32 proto ipencap \n\tdir out action block priority 53247" in shown
