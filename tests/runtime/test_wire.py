"""ce_runtime.wire: the precompiled messages are the nlmsg classes' bytes, the lean decoders their values.

The ``nlmsg`` classes (ce_runtime.xfrm, pyroute2's ifinfmsg) are the definition; every property
below compares against them on random specs. The batch path then runs against this host's
kernel in a scratch namespace (XFRM policies and link changes work here; ipip and ESP do not,
which gives real kernel errors to attribute). ipip and ESP themselves: tests/runtime/test_runtime_vm.py.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st
from netns import lab, scratch_netns  # noqa: F401 (fixtures)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ce_runtime import wire, xfrm
from ce_runtime.kernel import NetlinkKernel
from ce_runtime.model import AddLink, AddPolicy, AddSa, DelLink, DelPolicy, LinkSpec, Op, SetLink
from ce_runtime.xfrm import Action, Direction, Mode, MsgType, PolicySpec, SaSpec

A = IPv4Address
addresses = st.integers(0, 2**32 - 1).map(A)
u32 = st.integers(0, 2**32 - 1)
marks = st.none() | st.tuples(u32, u32)
seqs = st.integers(1, 2**32 - 1)

sas = st.builds(
    SaSpec,
    src=addresses,
    dst=addresses,
    spi=st.integers(0x100, 2**32 - 1),
    reqid=u32,
    key=st.sampled_from([20, 28, 36]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    icv_bits=st.sampled_from([64, 96, 128]),
    mark=marks,
    replay_window=st.integers(0, 255),
    mode=st.sampled_from(list(Mode)),
    hard_packets=st.none() | st.integers(1, 2**64 - 2),
)
prefixes = st.integers(0, 32)


def _network(address: IPv4Address, prefix: int) -> IPv4Address:
    return A(int(address) & ~((1 << (32 - prefix)) - 1) & 0xFFFFFFFF)


@st.composite
def _policies(draw: st.DrawFn) -> PolicySpec:
    """Allow (one ESP template) or block (none), any IPv4 selector."""
    action = draw(st.sampled_from(list(Action)))
    plen_s, plen_d = draw(prefixes), draw(prefixes)
    return PolicySpec(
        _network(draw(addresses), plen_s),
        _network(draw(addresses), plen_d),
        draw(st.sampled_from(list(Direction))),
        0 if action == Action.BLOCK else draw(u32),
        draw(u32),
        draw(st.integers(0, 255)),
        draw(marks),
        action,
        plen_s,
        plen_d,
    )


policies = _policies()
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=15)
links = st.builds(
    LinkSpec,
    name=names,
    local=addresses,
    remote=addresses,
    mtu=st.integers(68, 65535),
    alias=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    up=st.booleans(),
)


def _header(message: bytes) -> tuple[int, int, int, int]:
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", message)
    return length, kind, flags, seq


ADD = 0x605  # NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
CHANGE = 0x5  # NLM_F_REQUEST | NLM_F_ACK


@given(sas, seqs)
def test_sa_messages_are_the_nlmsg_bytes(sa: SaSpec, seq: int) -> None:
    new, delete = wire.new_sa(sa, seq), wire.delete_sa(sa, seq)
    assert new[16:] == bytes(xfrm.encode_sa(sa).data[16:])
    assert _header(new) == (len(new), MsgType.NEWSA, ADD, seq)
    assert delete[16:] == bytes(xfrm.encode_sa_id(sa).data[16:])
    assert _header(delete) == (len(delete), MsgType.DELSA, CHANGE, seq)


@given(policies, seqs)
def test_policy_messages_are_the_nlmsg_bytes(policy: PolicySpec, seq: int) -> None:
    new, delete = wire.new_policy(policy, seq), wire.delete_policy(policy, seq)
    assert new[16:] == bytes(xfrm.encode_policy(policy).data[16:])
    assert _header(new) == (len(new), MsgType.NEWPOLICY, ADD, seq)
    assert delete[16:] == bytes(xfrm.encode_policy_id(policy).data[16:])
    assert _header(delete) == (len(delete), MsgType.DELPOLICY, CHANGE, seq)


def _ifinfmsg(attrs: list[tuple[str, object]], flags: int = 0, change: int = 0, index: int = 0) -> bytes:
    msg = ifinfmsg()
    msg["family"] = 0
    msg["index"] = index
    msg["flags"] = flags
    msg["change"] = change
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data[16:])


@given(links, seqs)
def test_link_messages_are_the_ifinfmsg_bytes(link: LinkSpec, seq: int) -> None:
    ipip = [
        ("IFLA_IPIP_LOCAL", str(link.local)),
        ("IFLA_IPIP_REMOTE", str(link.remote)),
        ("IFLA_IPIP_TTL", 64),
    ]
    info = {"attrs": [("IFLA_INFO_KIND", "ipip"), ("IFLA_INFO_DATA", {"attrs": ipip})]}
    new = wire.new_link(link, seq)
    assert new[16:] == _ifinfmsg(
        [("IFLA_IFNAME", link.name), ("IFLA_MTU", link.mtu), ("IFLA_LINKINFO", info)]
    )
    assert _header(new) == (len(new), wire.RTM_NEWLINK, ADD, seq)
    up = wire.IFF_UP if link.up else 0
    alias = wire.set_link_alias(link, seq)
    assert alias[16:] == _ifinfmsg(
        [("IFLA_IFNAME", link.name), ("IFLA_IFALIAS", link.alias)], up, wire.IFF_UP
    )
    assert _header(alias) == (len(alias), wire.RTM_NEWLINK, CHANGE, seq)
    mtu = wire.set_link(link, seq)
    assert mtu[16:] == _ifinfmsg([("IFLA_IFNAME", link.name), ("IFLA_MTU", link.mtu)], up, wire.IFF_UP)
    delete = wire.delete_link(link, seq)
    assert delete[16:] == _ifinfmsg([("IFLA_IFNAME", link.name)])
    assert _header(delete) == (len(delete), wire.RTM_DELLINK, CHANGE, seq)


# Lean decoders: the same values as the nlmsg decoders, on ours and on altered messages.

SA_FIELDS = {  # offset in xfrm_usersa_info (+ the AEAD attribute at 224), struct format
    "family": (212, "=H"),
    "id_proto": (76, "=B"),
    "mode": (214, "=B"),
    "spi": (72, ">I"),
    "aead_key_bits": (224 + 4 + 64, "=I"),
    "aead_icv_bits": (224 + 4 + 68, "=I"),
}


@given(sas, st.dictionaries(st.sampled_from(sorted(SA_FIELDS)), st.integers(0, 255)), st.binary(max_size=8))
def test_sa_decoder_agrees_with_nlmsg(sa: SaSpec, changes: dict[str, int], name_tail: bytes) -> None:
    body = bytearray(xfrm.encode_sa(sa).data[16:])
    for field, value in changes.items():
        offset, fmt = SA_FIELDS[field]
        struct.pack_into(fmt, body, offset, value)
    body[224 + 4 + 17 : 224 + 4 + 17 + len(name_tail)] = name_tail  # after "rfc4106(gcm(aes))"
    assert wire.decode_sa(bytes(body)) == xfrm.decode_sa(bytes(body))
    if not changes and not name_tail.strip(b"\0"):
        assert wire.decode_sa(bytes(body)) == sa


POLICY_FIELDS = {
    "sel_family": (40, "=H"),
    "sel_prefixlen_d": (42, "=B"),
    "sel_prefixlen_s": (43, "=B"),
    "dir": (160, "=B"),
    "action": (161, "=B"),
    "tmpl_proto": (168 + 4 + 20, "=B"),
    "tmpl_mode": (168 + 4 + 48, "=B"),
}


@given(policies, st.dictionaries(st.sampled_from(sorted(POLICY_FIELDS)), st.integers(0, 255)), st.booleans())
def test_policy_decoder_agrees_with_nlmsg(policy: PolicySpec, changes: dict[str, int], extra: bool) -> None:
    body = bytearray(xfrm.encode_policy(policy).data[16:])
    if policy.action == Action.BLOCK:
        changes = {k: v for k, v in changes.items() if not k.startswith("tmpl_")}  # it has none
    for field, value in changes.items():
        offset, fmt = POLICY_FIELDS[field]
        struct.pack_into(fmt, body, offset, value)
    if extra and policy.action == Action.BLOCK:  # a block policy with a template: not one of ours
        allow = dataclasses.replace(policy, action=Action.ALLOW)
        body[168:168] = bytes(xfrm.encode_policy(allow).data[16 + 168 : 16 + 168 + 68])
    elif extra:  # a second template in the attribute: not one of ours
        struct.pack_into("=H", body, 168, 4 + 128)
        body[172 + 64 : 172 + 64] = body[172 : 172 + 64]
    assert wire.decode_policy(bytes(body)) == xfrm.decode_policy(bytes(body))
    if not changes and not extra:
        assert wire.decode_policy(bytes(body)) == policy


def _pyroute2_link(body: bytes) -> tuple[int, str, LinkSpec | None]:
    """What NetlinkKernel made of a dumped link through pyroute2's decoder (the code it replaced)."""
    msg = ifinfmsg(struct.pack("=IHHII", 16 + len(body), wire.RTM_NEWLINK, 0, 0, 0) + body)
    msg.decode()
    name = msg.get_attr("IFLA_IFNAME")
    spec = None
    if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "ipip":
        local = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_IPIP_LOCAL")
        remote = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_IPIP_REMOTE")
        mtu, alias = int(msg.get_attr("IFLA_MTU")), msg.get_attr("IFLA_IFALIAS") or ""
        spec = LinkSpec(name, A(local), A(remote), mtu, alias, bool(msg["flags"] & wire.IFF_UP))
    return msg["index"], name, spec


@given(links, st.integers(1, 2**31 - 1), st.none() | st.integers(1, 2**31 - 1), st.booleans())
def test_link_decoder_agrees_with_ifinfmsg(
    link: LinkSpec, index: int, master: int | None, alias: bool
) -> None:
    ipip = [
        ("IFLA_IPIP_LINK", 0),
        ("IFLA_IPIP_LOCAL", str(link.local)),
        ("IFLA_IPIP_REMOTE", str(link.remote)),
        ("IFLA_IPIP_TTL", 64),
    ]
    attrs: list[tuple[str, object]] = [
        ("IFLA_IFNAME", link.name),
        ("IFLA_TXQLEN", 1000),
        ("IFLA_MTU", link.mtu),
    ]
    attrs += [] if master is None else [("IFLA_MASTER", master)]
    attrs += [("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "ipip"), ("IFLA_INFO_DATA", {"attrs": ipip})]})]
    attrs += [("IFLA_IFALIAS", link.alias)] if alias else []
    body = _ifinfmsg(attrs, flags=0x1000 | (wire.IFF_UP if link.up else 0), index=index)
    dumped = wire.decode_link(body)
    assert dumped is not None
    assert (dumped.index, dumped.name, dumped.spec) == _pyroute2_link(body)
    assert dumped.spec == (
        link if alias else LinkSpec(link.name, link.local, link.remote, link.mtu, "", link.up)
    )
    assert (dumped.kind, dumped.master, dumped.table) == ("ipip", master, None)


def test_link_decoder_reads_a_vrf_and_other_kinds() -> None:
    vrf = {"attrs": [("IFLA_INFO_KIND", "vrf"), ("IFLA_INFO_DATA", {"attrs": [("IFLA_VRF_TABLE", 1007)]})]}
    body = _ifinfmsg([("IFLA_IFNAME", "vpn7"), ("IFLA_MTU", 65575), ("IFLA_LINKINFO", vrf)], index=9)
    dumped = wire.decode_link(body)
    assert dumped is not None
    assert (dumped.index, dumped.name, dumped.kind, dumped.table, dumped.spec) == (
        9,
        "vpn7",
        "vrf",
        1007,
        None,
    )
    veth = _ifinfmsg([("IFLA_IFNAME", "v1"), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]})])
    assert wire.decode_link(veth) == wire.DumpedLink(0, "v1", "veth", False, "", None, None, None)


# The batch path against this host's kernel.


def _ip(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "-n", netns, *argv], capture_output=True, text=True, check=True).stdout


def test_batches_against_the_host_kernel(scratch_netns: str) -> None:  # noqa: F811 (the fixture)
    """More than one send's worth of policies, a duplicate among them, errors on links: each result
    is the kernel's answer to its own op; the dump equals the nlmsg decoder's and `ip`'s view."""
    local = A("192.0.2.1")
    wanted = [
        PolicySpec(local, A(int(A("10.0.0.0")) + i), Direction.OUT, 0xCE000007, 0xCE00) for i in range(150)
    ]
    wanted.append(PolicySpec(A("10.9.0.1"), local, Direction.IN, 0xCE000007, 0xCE00, mark=(7, 0xFF)))
    ops: list[Op] = [AddPolicy(p) for p in wanted]
    ops.insert(wire.BATCH + 3, AddPolicy(wanted[3]))  # the same selector again, in the second send
    tunnel = LinkSpec("cetest0", local, A("192.0.2.2"), 1400, "ce-autoconf test")
    lo = LinkSpec("lo", A("0.0.0.0"), A("0.0.0.0"), 1400, "ignored", up=True)
    ops += [
        AddLink(tunnel),  # this kernel has no ipip
        SetLink(lo),
        DelLink(LinkSpec("nosuchlink", local, A("192.0.2.2"), 1400, "")),
        AddSa(SaSpec(local, A("192.0.2.2"), 0x1000, 0xCE000007, bytes(36))),  # nor ESP/GCM
    ]
    with NetlinkKernel(netns=scratch_netns) as kernel, xfrm.XfrmSocket(netns=scratch_netns) as sock:
        results = kernel.apply_all(ops)
        failed = {i: r for i, r in enumerate(results) if r is not None}
        assert set(failed) == {wire.BATCH + 3, len(ops) - 4, len(ops) - 2, len(ops) - 1}
        codes = {i: getattr(r, "code", None) for i, r in failed.items() if isinstance(r, NetlinkError)}
        assert codes[wire.BATCH + 3] == 17  # EEXIST: the duplicate, and nothing else of its send
        assert codes[len(ops) - 2] == 19  # ENODEV
        assert "Unknown device type" in str(failed[len(ops) - 4])  # the kernel's extended ack
        state = kernel.read()
        assert set(state.policies) == set(sock.dump_policies()) == set(wanted)
        assert "mtu 1400" in _ip(scratch_netns, "link", "show", "lo")
        assert "cetest0" not in _ip(scratch_netns, "link", "show")  # the alias step never ran
        assert _ip(scratch_netns, "xfrm", "policy").count("dir out priority 52736") == 150
        assert kernel.apply_all([DelPolicy(p) for p in wanted]) == [None] * len(wanted)
        assert kernel.read().policies == frozenset()
        assert _ip(scratch_netns, "xfrm", "policy").strip() == ""
