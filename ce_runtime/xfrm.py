"""XFRM (IPsec SA and policy) netlink messages, on pyroute2's netlink message machinery.

pyroute2 manages links and routes but has no XFRM state/policy messages. The structures
below follow ``include/uapi/linux/xfrm.h`` (x86-64 layout; the kernel's 64-bit
``xfrm_usersa_info`` is 224 bytes, the 32-bit compat one is not supported)::

    xfrm_selector (56)      daddr[16] saddr[16] dport dport_mask sport sport_mask (be16)
                            family(u16) prefixlen_d prefixlen_s proto(u8) pad(1) ifindex(i32) user(u32)
    xfrm_id (24)            daddr[16] spi(be32) proto(u8) pad(3)
    xfrm_lifetime_cfg (64)  8 x u64: soft/hard byte, soft/hard packet, soft/hard add, soft/hard use
    xfrm_lifetime_cur (32)  bytes packets add_time use_time (u64)
    xfrm_usersa_info (224)  sel id saddr[16] lft curlft stats(3 x u32) seq reqid (u32)
                            family(u16) mode replay_window flags (u8) pad(7)
    xfrm_usersa_id (24)     daddr[16] spi(be32) family(u16) proto(u8) pad(1)
    xfrm_userpolicy_info (168) sel lft curlft priority index (u32) dir action flags share (u8) pad(4)
    xfrm_userpolicy_id (64) sel index(u32) dir(u8) pad(3)
    xfrm_user_tmpl (64)     id family(u16) pad(2) saddr[16] reqid(u32) mode share optional (u8) pad(1)
                            aalgos ealgos calgos (u32)
    xfrm_algo_aead          alg_name[64] alg_key_len(bits, u32) alg_icv_len(bits, u32) key[]
    xfrm_mark (8)           v m (u32)

The typed surface is :class:`SaSpec`/:class:`PolicySpec` (frozen values) and :class:`XfrmSocket`
(add, delete, dump). Only IPv4 is supported: the CE tunnels run between IPv4 provider addresses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any, Final

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, nla, nlmsg
from pyroute2.netlink.nlsocket import NetlinkSocket

__all__ = [
    "AEAD_ALGO",
    "IPPROTO_ESP",
    "IPPROTO_IPIP",
    "NETLINK_XFRM",
    "Action",
    "Direction",
    "Mode",
    "MsgType",
    "PolicySpec",
    "SaSpec",
    "XfrmSocket",
    "decode_policy",
    "decode_sa",
    "encode_policy",
    "encode_policy_id",
    "encode_sa",
    "encode_sa_id",
]

NETLINK_XFRM: Final = 6
AF_INET: Final = 2
IPPROTO_IPIP: Final = 4
IPPROTO_ESP: Final = 50
AEAD_ALGO: Final = "rfc4106(gcm(aes))"
XFRM_INF: Final = (1 << 64) - 1
XFRM_POLICY_ALLOW: Final = 0
XFRM_POLICY_BLOCK: Final = 1


class MsgType(IntEnum):
    """``XFRM_MSG_*`` (linux/xfrm.h)."""

    NEWSA = 0x10
    DELSA = 0x11
    GETSA = 0x12
    NEWPOLICY = 0x13
    DELPOLICY = 0x14
    GETPOLICY = 0x15


class Mode(IntEnum):
    TRANSPORT = 0
    TUNNEL = 1


class Action(IntEnum):
    """``XFRM_POLICY_ALLOW`` (through the policy's template) or ``XFRM_POLICY_BLOCK`` (dropped)."""

    ALLOW = 0
    BLOCK = 1


class Direction(IntEnum):
    """``XFRM_POLICY_IN``/``OUT``/``FWD``."""

    IN = 0
    OUT = 1
    FWD = 2


_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)
_LFT = tuple(
    (f"lft_{name}", "Q")
    for name in (
        "soft_byte_limit",
        "hard_byte_limit",
        "soft_packet_limit",
        "hard_packet_limit",
        "soft_add_expires_seconds",
        "hard_add_expires_seconds",
        "soft_use_expires_seconds",
        "hard_use_expires_seconds",
    )
)
_CURLFT = (("cur_bytes", "Q"), ("cur_packets", "Q"), ("cur_add_time", "Q"), ("cur_use_time", "Q"))


class _xfrm_attrs(nlmsg):  # type: ignore[misc]  # noqa: N801 - pyroute2's naming
    """The ``XFRMA_*`` attributes we use; others are decoded as raw bytes and ignored."""

    nla_map = (
        (0, "XFRMA_UNSPEC", "none"),
        (1, "XFRMA_ALG_AUTH", "cdata"),
        (2, "XFRMA_ALG_CRYPT", "cdata"),
        (3, "XFRMA_ALG_COMP", "cdata"),
        (4, "XFRMA_ENCAP", "cdata"),
        (5, "XFRMA_TMPL", "cdata"),
        (18, "XFRMA_ALG_AEAD", "cdata"),
        (21, "XFRMA_MARK", "xfrm_mark"),
        (24, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
    )

    class xfrm_mark(nla):  # type: ignore[misc]  # noqa: N801
        fields = (("v", "I"), ("m", "I"))


class xfrm_usersa_info(_xfrm_attrs):  # noqa: N801
    fields = (
        *_SELECTOR,
        ("id_daddr", "16s"),
        ("id_spi", ">I"),
        ("id_proto", "B"),
        ("__id_pad", "3x"),
        ("saddr", "16s"),
        *_LFT,
        *_CURLFT,
        ("stats_replay_window", "I"),
        ("stats_replay", "I"),
        ("stats_integrity_failed", "I"),
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad", "7x"),
    )


class xfrm_usersa_id(_xfrm_attrs):  # noqa: N801
    fields = (("daddr", "16s"), ("spi", ">I"), ("family", "H"), ("proto", "B"), ("__pad", "x"))


class xfrm_userpolicy_info(_xfrm_attrs):  # noqa: N801
    fields = (
        *_SELECTOR,
        *_LFT,
        *_CURLFT,
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad", "4x"),
    )


class xfrm_userpolicy_id(_xfrm_attrs):  # noqa: N801
    fields = (*_SELECTOR, ("index", "I"), ("dir", "B"), ("__pad", "3x"))


_TMPL = struct.Struct("=16sIB3xH2x16sIBBBxIII")  # xfrm_user_tmpl, 64 bytes
_AEAD_HEAD = struct.Struct("=64sII")
_ALL_ALGOS: Final = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
assert _TMPL.size == 64
assert _AEAD_HEAD.size == 72


def _addr(address: IPv4Address) -> bytes:
    return address.packed + bytes(12)


def _ipv4(raw: bytes) -> IPv4Address:
    return IPv4Address(raw[:4])


@dataclass(frozen=True, slots=True)
class SaSpec:
    """One ESP transport-mode SA with an AEAD key (``rfc4106(gcm(aes))``: AES key + 4-octet salt).

    ``key`` is secret: it is excluded from ``repr`` so that logging a spec cannot leak it.
    ``hard_packets``: the kernel expires the SA after that many packets (None: no limit).
    ``packets``/``bytes_`` are the kernel's current counters (zero in a desired spec; not compared).
    """

    src: IPv4Address
    dst: IPv4Address
    spi: int
    reqid: int
    key: bytes = field(repr=False)
    icv_bits: int = 128
    mark: tuple[int, int] | None = None
    replay_window: int = 32
    algorithm: str = AEAD_ALGO
    mode: Mode = Mode.TRANSPORT
    hard_packets: int | None = None
    packets: int = field(default=0, compare=False)
    bytes_: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not 0x100 <= self.spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI {self.spi:#x}: values below 256 are reserved (RFC 4303 section 2.1)")
        if not 0 <= self.reqid <= 0xFFFFFFFF:
            raise ValueError(f"reqid {self.reqid} out of range")
        if self.algorithm == AEAD_ALGO and len(self.key) not in (20, 28, 36):
            raise ValueError("rfc4106(gcm(aes)) takes an AES key of 16/24/32 octets plus a 4-octet salt")
        if self.icv_bits not in (64, 96, 128):
            raise ValueError(f"ICV of {self.icv_bits} bits")
        if not 0 <= self.replay_window <= 255:
            raise ValueError("replay window is one octet")
        if self.hard_packets is not None and not 0 < self.hard_packets < XFRM_INF:
            raise ValueError(f"hard packet limit {self.hard_packets}")

    @property
    def ident(self) -> tuple[IPv4Address, int]:
        """What the kernel keys an ESP SA by: (destination, SPI)."""
        return (self.dst, self.spi)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """IPv4 ``src``/``src_prefix`` -> ``dst``/``dst_prefix`` traffic of IP protocol ``proto``.

    ``Action.ALLOW``: it must use ESP in transport mode (one template carrying ``reqid``).
    ``Action.BLOCK``: it is dropped (no template, ``reqid`` 0); see :meth:`guard`.
    """

    src: IPv4Address
    dst: IPv4Address
    direction: Direction
    reqid: int
    priority: int
    proto: int = IPPROTO_IPIP
    mark: tuple[int, int] | None = None
    action: Action = Action.ALLOW
    src_prefix: int = 32
    dst_prefix: int = 32
    index: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for address, prefix in ((self.src, self.src_prefix), (self.dst, self.dst_prefix)):
            if not 0 <= prefix <= 32 or int(address) & ((1 << (32 - prefix)) - 1):
                raise ValueError(f"selector {address}/{prefix}: not a network")
        if self.action == Action.BLOCK and self.reqid:
            raise ValueError("a block policy has no template, so no reqid")

    @classmethod
    def guard(cls, peer: IPv4Address, direction: Direction, priority: int) -> PolicySpec:
        """Drop IP-in-IP to (out) or from (in) ``peer`` that no policy of higher precedence protects.

        The local side is a wildcard on purpose: the kernel treats policies with equal selector,
        direction and mark as one (priority is not part of that key since Linux 5.8), so a guard
        with the protecting policy's own ``/32 -> /32`` selector would replace it.
        """
        zero = IPv4Address(0)
        if direction == Direction.OUT:
            return cls(zero, peer, direction, 0, priority, action=Action.BLOCK, src_prefix=0)
        return cls(peer, zero, direction, 0, priority, action=Action.BLOCK, dst_prefix=0)

    @property
    def ident(self) -> tuple[IPv4Address, int, IPv4Address, int, int, Direction]:
        """What the kernel keys a policy by (with the mark): selector and direction."""
        return (self.src, self.src_prefix, self.dst, self.dst_prefix, self.proto, self.direction)


def _selector(
    msg: nlmsg, src: IPv4Address, dst: IPv4Address, proto: int, *, plen_s: int = 32, plen_d: int = 32
) -> None:
    msg["sel_daddr"] = _addr(dst)
    msg["sel_saddr"] = _addr(src)
    msg["sel_family"] = AF_INET
    msg["sel_prefixlen_d"] = plen_d
    msg["sel_prefixlen_s"] = plen_s
    msg["sel_proto"] = proto


def _zero(msg: nlmsg, names: tuple[tuple[str, str], ...]) -> None:
    for name, fmt in names:
        if not name.startswith("_"):
            msg[name] = b"" if fmt.endswith("s") else 0


def _mark_attr(mark: tuple[int, int] | None) -> list[tuple[str, Any]]:
    return [] if mark is None else [("XFRMA_MARK", {"v": mark[0], "m": mark[1]})]


def encode_sa(sa: SaSpec) -> nlmsg:
    """An ``XFRM_MSG_NEWSA`` body for ``sa``, encoded (``.data`` holds the bytes without header)."""
    msg = xfrm_usersa_info()
    _zero(msg, msg.fields)
    # Transport mode: the selector restricts the SA to this pair of hosts.
    _selector(msg, sa.src, sa.dst, 0)
    msg["id_daddr"] = _addr(sa.dst)
    msg["id_spi"] = sa.spi
    msg["id_proto"] = IPPROTO_ESP
    msg["saddr"] = _addr(sa.src)
    for limit in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit"):
        msg[f"lft_{limit}"] = XFRM_INF
    if sa.hard_packets is not None:
        msg["lft_hard_packet_limit"] = sa.hard_packets
    msg["reqid"] = sa.reqid
    msg["family"] = AF_INET
    msg["mode"] = int(sa.mode)
    msg["replay_window"] = sa.replay_window
    aead = _AEAD_HEAD.pack(sa.algorithm.encode("ascii"), len(sa.key) * 8, sa.icv_bits) + sa.key
    msg["attrs"] = [("XFRMA_ALG_AEAD", aead), *_mark_attr(sa.mark)]
    msg.encode()
    return msg


def encode_sa_id(sa: SaSpec) -> nlmsg:
    """An ``XFRM_MSG_DELSA`` body: (daddr, SPI, ESP) and the mark, which the kernel's lookup needs."""
    msg = xfrm_usersa_id()
    msg["daddr"] = _addr(sa.dst)
    msg["spi"] = sa.spi
    msg["family"] = AF_INET
    msg["proto"] = IPPROTO_ESP
    msg["attrs"] = _mark_attr(sa.mark)
    msg.encode()
    return msg


def _mark_of(msg: nlmsg) -> tuple[int, int] | None:
    mark = msg.get_attr("XFRMA_MARK")
    return None if mark is None else (int(mark["v"]), int(mark["m"]))


def _framed(kind: MsgType, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def decode_sa(body: bytes) -> SaSpec | None:
    """The SA in an ``XFRM_MSG_NEWSA`` body (dump reply), or None if it is not an IPv4 ESP AEAD SA."""
    msg = xfrm_usersa_info(_framed(MsgType.NEWSA, body))
    msg.decode()
    if msg["family"] != AF_INET or msg["id_proto"] != IPPROTO_ESP:
        return None
    aead = msg.get_attr("XFRMA_ALG_AEAD")
    if aead is None or len(aead) < _AEAD_HEAD.size:
        return None
    name, key_bits, icv_bits = _AEAD_HEAD.unpack_from(aead)
    key = bytes(aead[_AEAD_HEAD.size : _AEAD_HEAD.size + (key_bits + 7) // 8])
    try:
        return SaSpec(
            src=_ipv4(msg["saddr"]),
            dst=_ipv4(msg["id_daddr"]),
            spi=int(msg["id_spi"]),
            reqid=int(msg["reqid"]),
            key=key,
            icv_bits=int(icv_bits),
            mark=_mark_of(msg),
            replay_window=int(msg["replay_window"]),
            algorithm=name.rstrip(b"\0").decode("ascii", "replace"),
            mode=Mode(msg["mode"]),
            hard_packets=None
            if msg["lft_hard_packet_limit"] == XFRM_INF
            else int(msg["lft_hard_packet_limit"]),
            packets=int(msg["cur_packets"]),
            bytes_=int(msg["cur_bytes"]),
        )
    except ValueError:
        return None  # something we would never have installed (another algorithm, a reserved SPI)


def encode_policy(policy: PolicySpec) -> nlmsg:
    """An ``XFRM_MSG_NEWPOLICY`` body: allow with one ESP transport template carrying ``reqid``,
    or block (no template)."""
    msg = xfrm_userpolicy_info()
    _zero(msg, msg.fields)
    _selector(msg, policy.src, policy.dst, policy.proto, plen_s=policy.src_prefix, plen_d=policy.dst_prefix)
    for limit in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit"):
        msg[f"lft_{limit}"] = XFRM_INF
    msg["priority"] = policy.priority
    msg["dir"] = int(policy.direction)
    msg["action"] = int(policy.action)
    if policy.action == Action.BLOCK:
        msg["attrs"] = _mark_attr(policy.mark)
        msg.encode()
        return msg
    # id.daddr/saddr stay zero: in transport mode the SA is found by the packet's own addresses.
    # aalgos/ealgos/calgos all ones make the kernel set tmpl->allalgs; with aalgos 0 an AEAD SA
    # (aalgo 0) fails xfrm_state_ok() on input and every inbound packet is a template mismatch.
    share = optional = 0
    tmpl = _TMPL.pack(
        bytes(16),
        0,
        IPPROTO_ESP,
        AF_INET,
        bytes(16),
        policy.reqid,
        Mode.TRANSPORT,
        share,
        optional,
        *_ALL_ALGOS,
    )
    msg["attrs"] = [("XFRMA_TMPL", tmpl), *_mark_attr(policy.mark)]
    msg.encode()
    return msg


def encode_policy_id(policy: PolicySpec) -> nlmsg:
    """An ``XFRM_MSG_DELPOLICY`` body: selector and direction (and the mark)."""
    msg = xfrm_userpolicy_id()
    _zero(msg, msg.fields)
    _selector(msg, policy.src, policy.dst, policy.proto, plen_s=policy.src_prefix, plen_d=policy.dst_prefix)
    msg["dir"] = int(policy.direction)
    msg["attrs"] = _mark_attr(policy.mark)
    msg.encode()
    return msg


def decode_policy(body: bytes) -> PolicySpec | None:
    """The policy in an ``XFRM_MSG_NEWPOLICY`` body, or None if it is not one we could have installed:
    IPv4, and either allow through exactly one ESP transport template or block without one."""
    msg = xfrm_userpolicy_info(_framed(MsgType.NEWPOLICY, body))
    msg.decode()
    tmpl = msg.get_attr("XFRMA_TMPL")
    action = msg["action"]
    if msg["sel_family"] != AF_INET or msg["dir"] not in (0, 1, 2) or action not in (0, 1):
        return None
    if action == Action.BLOCK:
        if tmpl is not None:
            return None
        reqid = 0
    else:
        if tmpl is None or len(tmpl) != _TMPL.size:  # exactly one template: ours have one
            return None
        fields = _TMPL.unpack(bytes(tmpl))
        proto, reqid, mode = fields[2], fields[5], fields[6]
        if proto != IPPROTO_ESP or mode != Mode.TRANSPORT:
            return None
    try:
        return PolicySpec(
            src=_ipv4(msg["sel_saddr"]),
            dst=_ipv4(msg["sel_daddr"]),
            direction=Direction(msg["dir"]),
            reqid=int(reqid),
            priority=int(msg["priority"]),
            proto=int(msg["sel_proto"]),
            mark=_mark_of(msg),
            action=Action(action),
            src_prefix=int(msg["sel_prefixlen_s"]),
            dst_prefix=int(msg["sel_prefixlen_d"]),
            index=int(msg["index"]),
        )
    except ValueError:
        return None  # a prefix over 32 or host bits set: not an IPv4 selector we write


class _Dump(nlmsg):  # type: ignore[misc]
    """A reply we decode ourselves: pyroute2 only frames it."""

    fields = ()
    nla_map = ()


class XfrmSocket:
    """NETLINK_XFRM requests: add/delete/dump SAs and policies (needs CAP_NET_ADMIN).

    Opened in the calling thread's network namespace, or in ``netns`` (a name under /run/netns).
    """

    def __init__(self, netns: str | None = None) -> None:
        self._sock: Any = (
            NetlinkSocket(family=NETLINK_XFRM, netns=netns) if netns else NetlinkSocket(NETLINK_XFRM)
        )
        for kind in (MsgType.NEWSA, MsgType.NEWPOLICY):
            self._sock.marshal.msg_map[kind] = _Dump

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, msg: nlmsg, kind: MsgType, flags: int) -> list[Any]:
        return list(self._sock.nlm_request(msg, msg_type=int(kind), msg_flags=flags))

    def _bodies(self, replies: list[Any], kind: MsgType) -> Iterator[bytes]:
        for reply in replies:
            if reply["header"]["type"] == kind:
                start = reply.offset + 16
                yield bytes(reply.data[start : reply.offset + reply["header"]["length"]])

    def add_sa(self, sa: SaSpec) -> None:
        self._request(encode_sa(sa), MsgType.NEWSA, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def delete_sa(self, sa: SaSpec) -> None:
        self._request(encode_sa_id(sa), MsgType.DELSA, NLM_F_REQUEST | NLM_F_ACK)

    def dump_sas(self) -> list[SaSpec]:
        query = xfrm_usersa_info()
        _zero(query, query.fields)
        query.encode()
        replies = self._request(query, MsgType.GETSA, NLM_F_REQUEST | NLM_F_DUMP)
        return [sa for body in self._bodies(replies, MsgType.NEWSA) if (sa := decode_sa(body)) is not None]

    def add_policy(self, policy: PolicySpec) -> None:
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self._request(encode_policy(policy), MsgType.NEWPOLICY, flags)

    def delete_policy(self, policy: PolicySpec) -> None:
        self._request(encode_policy_id(policy), MsgType.DELPOLICY, NLM_F_REQUEST | NLM_F_ACK)

    def dump_policies(self) -> list[PolicySpec]:
        query = xfrm_userpolicy_id()
        _zero(query, query.fields)
        query.encode()
        replies = self._request(query, MsgType.GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP)
        return [
            p for body in self._bodies(replies, MsgType.NEWPOLICY) if (p := decode_policy(body)) is not None
        ]
