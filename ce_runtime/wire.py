"""The runtime's hot netlink messages, precompiled, and a socket that sends them in batches.

Why: building an XFRM or link message through pyroute2's ``nlmsg`` classes costs 100-170 µs on
this machine and its synchronous request path about 400 µs more per message, against tens of µs
of kernel work; a 500-peer reconcile sends 8000 messages. Here each message is one
``struct.Struct.pack`` into a layout compiled once, and a round's messages go to the kernel many
per ``send`` (each with ``NLM_F_ACK`` and its own sequence number), their acknowledgements read
back and matched to the message by sequence number, so that every failure is attributed to its
operation.

The ``nlmsg`` classes (:mod:`ce_runtime.xfrm`, pyroute2's ``ifinfmsg``) stay the definition:
``tests/runtime/test_wire.py`` checks these bytes against theirs, and the lean dump decoders
below against :func:`ce_runtime.xfrm.decode_sa`/:func:`~ce_runtime.xfrm.decode_policy` and
pyroute2's link decoder. Layouts are the x86-64 ones documented in :mod:`ce_runtime.xfrm`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from pyroute2.netlink.exceptions import NetlinkError

from ce_runtime.model import LinkSpec
from ce_runtime.xfrm import (
    AF_INET,
    IPPROTO_ESP,
    XFRM_INF,
    Action,
    Direction,
    Mode,
    MsgType,
    PolicySpec,
    SaSpec,
)

__all__ = [
    "BATCH",
    "IFF_UP",
    "LINK_DUMP",
    "NETLINK_ROUTE",
    "NETLINK_XFRM",
    "POLICY_DUMP",
    "SA_DUMP",
    "DumpedLink",
    "NetlinkChannel",
    "decode_link",
    "decode_policy",
    "decode_sa",
    "delete_link",
    "delete_policy",
    "delete_sa",
    "dump_request",
    "new_link",
    "new_policy",
    "new_sa",
    "set_link",
    "set_link_alias",
]

NETLINK_ROUTE: Final = 0
NETLINK_XFRM: Final = 6
SOL_NETLINK: Final = 270
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11

NLM_F_REQUEST: Final = 0x1
NLM_F_MULTI: Final = 0x2
NLM_F_ACK: Final = 0x4
NLM_F_DUMP_INTR: Final = 0x10
NLM_F_CAPPED: Final = 0x100
NLM_F_ACK_TLVS: Final = 0x200
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSGERR_ATTR_MSG: Final = 1
NLA_TYPE_MASK: Final = 0x3FFF

RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTM_GETLINK: Final = 18
IFF_UP: Final = 1
IFLA_IFNAME: Final = 3
IFLA_MTU: Final = 4
IFLA_MASTER: Final = 10
IFLA_LINKINFO: Final = 18
IFLA_IFALIAS: Final = 20
IFLA_INFO_KIND: Final = 1
IFLA_INFO_DATA: Final = 2
IFLA_IPTUN_LOCAL: Final = 2
IFLA_IPTUN_REMOTE: Final = 3
IFLA_IPTUN_TTL: Final = 4
IFLA_VRF_TABLE: Final = 1
XFRMA_TMPL: Final = 5
XFRMA_ALG_AEAD: Final = 18
XFRMA_MARK: Final = 21

ADD: Final = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
CHANGE: Final = NLM_F_REQUEST | NLM_F_ACK
BATCH: Final = 64  # messages per send: their acks (~0.5-1 KiB of receive buffer each) must fit

_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_U32_NLA = struct.Struct("=HHI")
_MARK = struct.Struct("=HHII")
_ERR = struct.Struct("=iIHHII")  # nlmsgerr: error, then the request's header

_LFT_INF = struct.pack("=8Q", XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)


def _sa_lft(hard_packets: int | None) -> bytes:
    """xfrm_lifetime_cfg of an SA: no limits but the hard packet limit, if any."""
    if hard_packets is None:
        return _LFT_INF
    return struct.pack("=8Q", XFRM_INF, XFRM_INF, XFRM_INF, hard_packets, 0, 0, 0, 0)


_ALL_ALGOS: Final = 0xFFFFFFFF
# The 16-octet address fields hold an IPv4 address in their first 4 octets ("4s12x").
_SELECTOR = "4s12x4s12x8xHBBB3x8x"  # daddr saddr ports(0) family plen_d plen_s proto ifindex/user(0)
# nlmsghdr + xfrm_usersa_info (224) + XFRMA_ALG_AEAD header + xfrm_algo_aead head (key follows).
_NEWSA = struct.Struct("=IHHII" + _SELECTOR + "4s12x4sB3x" + "4s12x" + "64s" + "44x4xIHBBB7x" + "HH64sII")
# nlmsghdr + xfrm_usersa_id (24).
_DELSA = struct.Struct("=IHHII4s12x4sHBx")
# nlmsghdr + xfrm_userpolicy_info (168) + XFRMA_TMPL with one xfrm_user_tmpl (64).
_NEWPOLICY = struct.Struct("=IHHII" + _SELECTOR + "64s32xIIBBBB4x" + "HH" + "16x4xB3xH2x16xIBBBxIII")
# nlmsghdr + xfrm_userpolicy_info (168): a block policy has no template.
_NEWPOLICY_BLOCK = struct.Struct("=IHHII" + _SELECTOR + "64s32xIIBBBB4x")
# nlmsghdr + xfrm_userpolicy_id (64).
_DELPOLICY = struct.Struct("=IHHII" + _SELECTOR + "IB3x")
_IFINFO = struct.Struct("=IHHIIBxHiII")  # nlmsghdr + ifinfomsg (16)
assert _NEWSA.size == 16 + 224 + 4 + 72
assert _DELSA.size == 16 + 24
assert _NEWPOLICY.size == 16 + 168 + 4 + 64
assert _NEWPOLICY_BLOCK.size == 16 + 168
assert _DELPOLICY.size == 16 + 64
assert _IFINFO.size == 32


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _mark(mark: tuple[int, int] | None) -> bytes:
    return b"" if mark is None else _MARK.pack(12, XFRMA_MARK, mark[0], mark[1])


def _str_attr(kind: int, value: str) -> bytes:
    raw = value.encode() + b"\0"
    return _NLA.pack(4 + len(raw), kind) + raw + bytes(_pad(len(raw)) - len(raw))


def _with_length(message: bytes) -> bytes:
    """Write the total length into a message built with a zero ``nlmsg_len``."""
    return struct.pack("=I", len(message)) + message[4:]


# XFRM ------------------------------------------------------------------------------------------


def new_sa(sa: SaSpec, seq: int) -> bytes:
    """``XFRM_MSG_NEWSA`` (create, exclusive) for ``sa``: the bytes of :func:`ce_runtime.xfrm.encode_sa`."""
    src, dst = sa.src.packed, sa.dst.packed
    aead_len = 4 + 72 + len(sa.key)
    mark = _mark(sa.mark)
    length = _NEWSA.size + len(sa.key) + (_pad(aead_len) - aead_len) + len(mark)
    head = _NEWSA.pack(
        length, MsgType.NEWSA, ADD, seq, 0,
        dst, src, AF_INET, 32, 32, 0,  # selector: this pair of hosts, any protocol
        dst, sa.spi.to_bytes(4, "big"), IPPROTO_ESP,
        src,
        _sa_lft(sa.hard_packets),
        sa.reqid, AF_INET, sa.mode, sa.replay_window, 0,
        aead_len, XFRMA_ALG_AEAD, sa.algorithm.encode("ascii"), len(sa.key) * 8, sa.icv_bits,
    )  # fmt: skip
    return head + sa.key + bytes(_pad(aead_len) - aead_len) + mark


def delete_sa(sa: SaSpec, seq: int) -> bytes:
    """``XFRM_MSG_DELSA``: (daddr, SPI, ESP) and the mark (:func:`ce_runtime.xfrm.encode_sa_id`)."""
    mark = _mark(sa.mark)
    head = _DELSA.pack(
        _DELSA.size + len(mark), MsgType.DELSA, CHANGE, seq, 0,
        sa.dst.packed, sa.spi.to_bytes(4, "big"), AF_INET, IPPROTO_ESP,
    )  # fmt: skip
    return head + mark


def new_policy(policy: PolicySpec, seq: int) -> bytes:
    """``XFRM_MSG_NEWPOLICY`` (create, exclusive): :func:`ce_runtime.xfrm.encode_policy`'s bytes."""
    mark = _mark(policy.mark)
    if policy.action == Action.BLOCK:
        head = _NEWPOLICY_BLOCK.pack(
            _NEWPOLICY_BLOCK.size + len(mark), MsgType.NEWPOLICY, ADD, seq, 0,
            policy.dst.packed, policy.src.packed, AF_INET, policy.dst_prefix, policy.src_prefix, policy.proto,
            _LFT_INF, policy.priority, 0, policy.direction, Action.BLOCK, 0, 0,
        )  # fmt: skip
        return head + mark
    head = _NEWPOLICY.pack(
        _NEWPOLICY.size + len(mark), MsgType.NEWPOLICY, ADD, seq, 0,
        policy.dst.packed, policy.src.packed, AF_INET, policy.dst_prefix, policy.src_prefix, policy.proto,
        _LFT_INF, policy.priority, 0, policy.direction, policy.action, 0, 0,
        4 + 64, XFRMA_TMPL,
        IPPROTO_ESP, AF_INET, policy.reqid, Mode.TRANSPORT, 0, 0, _ALL_ALGOS, _ALL_ALGOS, _ALL_ALGOS,
    )  # fmt: skip
    return head + mark


def delete_policy(policy: PolicySpec, seq: int) -> bytes:
    """``XFRM_MSG_DELPOLICY``: selector, direction, mark (:func:`ce_runtime.xfrm.encode_policy_id`)."""
    mark = _mark(policy.mark)
    head = _DELPOLICY.pack(
        _DELPOLICY.size + len(mark), MsgType.DELPOLICY, CHANGE, seq, 0,
        policy.dst.packed, policy.src.packed, AF_INET, policy.dst_prefix, policy.src_prefix, policy.proto,
        0, policy.direction,
    )  # fmt: skip
    return head + mark


SA_DUMP: Final = bytes(224)  # a zeroed xfrm_usersa_info, as XfrmSocket.dump_sas sends
POLICY_DUMP: Final = bytes(64)  # a zeroed xfrm_userpolicy_id
LINK_DUMP: Final = bytes(16)  # a zeroed ifinfomsg: every link


def dump_request(kind: int, body: bytes, seq: int) -> bytes:
    """A dump request of message type ``kind`` (``XFRM_MSG_GETSA``, ``RTM_GETLINK`` ...)."""
    return _HDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _attrs(data: memoryview | bytes, offset: int) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) of the netlink attributes in ``data`` from ``offset``."""
    view = memoryview(data)
    end = len(view)
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(view, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & NLA_TYPE_MASK, view[offset + 4 : offset + length]
        offset += _pad(length)


# ... id daddr/spi/proto, saddr, lft's hard packet limit, curlft bytes/packets, reqid ...
_SA_HEAD = struct.Struct("=56x4s12x4sB3x4s12x24xQ32xQQ32xIHBB")
_AEAD_HEAD = struct.Struct("=64sII")
_POLICY_HEAD = struct.Struct("=4s12x4s12x8xHBBB11x64x32xIIBB")
_TMPL_FIELDS = struct.Struct("=20xB23xIB")  # proto, reqid, mode of an xfrm_user_tmpl


def decode_sa(body: bytes | memoryview) -> SaSpec | None:
    """:func:`ce_runtime.xfrm.decode_sa` without the ``nlmsg`` machinery (same results)."""
    if len(body) < 224:
        return None
    daddr, spi, proto, saddr, hard, cur_bytes, cur_packets, reqid, family, mode, replay = (
        _SA_HEAD.unpack_from(body)
    )
    if family != AF_INET or proto != IPPROTO_ESP:
        return None
    aead = mark = None
    for kind, value in _attrs(body, 224):
        if kind == XFRMA_ALG_AEAD and aead is None:
            aead = value
        elif kind == XFRMA_MARK and mark is None and len(value) >= 8:
            mark = struct.unpack_from("=II", value)
    if aead is None or len(aead) < _AEAD_HEAD.size:
        return None
    name, key_bits, icv_bits = _AEAD_HEAD.unpack_from(aead)
    try:
        return SaSpec(
            src=IPv4Address(saddr),
            dst=IPv4Address(daddr),
            spi=int.from_bytes(spi, "big"),
            reqid=reqid,
            key=bytes(aead[_AEAD_HEAD.size : _AEAD_HEAD.size + (key_bits + 7) // 8]),
            icv_bits=icv_bits,
            mark=mark,
            replay_window=replay,
            algorithm=name.rstrip(b"\0").decode("ascii", "replace"),
            mode=Mode(mode),
            hard_packets=None if hard == XFRM_INF else hard,
            packets=cur_packets,
            bytes_=cur_bytes,
        )
    except ValueError:
        return None


def decode_policy(body: bytes | memoryview) -> PolicySpec | None:
    """:func:`ce_runtime.xfrm.decode_policy` without the ``nlmsg`` machinery (same results)."""
    if len(body) < 168:
        return None
    daddr, saddr, family, plen_d, plen_s, proto, priority, index, direction, action = (
        _POLICY_HEAD.unpack_from(body)
    )
    tmpl = mark = None
    for kind, value in _attrs(body, 168):
        if kind == XFRMA_TMPL and tmpl is None:
            tmpl = value
        elif kind == XFRMA_MARK and mark is None and len(value) >= 8:
            mark = struct.unpack_from("=II", value)
    if family != AF_INET or direction not in (0, 1, 2) or action not in (0, 1):
        return None
    if action == Action.BLOCK:
        if tmpl is not None:
            return None
        reqid = 0
    else:
        if tmpl is None or len(tmpl) != 64:  # exactly one template: ours have one
            return None
        tmpl_proto, reqid, mode = _TMPL_FIELDS.unpack_from(tmpl)
        if tmpl_proto != IPPROTO_ESP or mode != Mode.TRANSPORT:
            return None
    try:
        return PolicySpec(
            src=IPv4Address(saddr),
            dst=IPv4Address(daddr),
            direction=Direction(direction),
            reqid=reqid,
            priority=priority,
            proto=proto,
            mark=mark,
            action=Action(action),
            src_prefix=plen_s,
            dst_prefix=plen_d,
            index=index,
        )
    except ValueError:
        return None


# RTM links -------------------------------------------------------------------------------------


def _ifinfo(kind: int, flags: int, seq: int, ifi_flags: int, change: int) -> bytes:
    return _IFINFO.pack(0, kind, flags, seq, 0, 0, 0, 0, ifi_flags, change)


def new_link(link: LinkSpec, seq: int) -> bytes:
    """``RTM_NEWLINK`` (create, exclusive): an ipip link ``local`` -> ``remote``, TTL 64, its MTU, down.

    The kernel ignores ``IFLA_IFALIAS`` on creation: :func:`set_link_alias` follows (and brings it up).
    """
    ipip = (
        _NLA.pack(8, IFLA_IPTUN_LOCAL) + link.local.packed
        + _NLA.pack(8, IFLA_IPTUN_REMOTE) + link.remote.packed
        + _NLA.pack(5, IFLA_IPTUN_TTL) + b"\x40\0\0\0"
    )  # fmt: skip
    info = _str_attr(IFLA_INFO_KIND, "ipip") + _NLA.pack(4 + len(ipip), IFLA_INFO_DATA) + ipip
    body = (
        _str_attr(IFLA_IFNAME, link.name)
        + _U32_NLA.pack(8, IFLA_MTU, link.mtu)
        + _NLA.pack(4 + len(info), IFLA_LINKINFO)
        + info
    )
    return _with_length(_ifinfo(RTM_NEWLINK, ADD, seq, 0, 0) + body)


def set_link_alias(link: LinkSpec, seq: int) -> bytes:
    """``RTM_NEWLINK`` on the link named ``link.name``: its alias, and up (or down)."""
    up = IFF_UP if link.up else 0
    body = _str_attr(IFLA_IFNAME, link.name) + _str_attr(IFLA_IFALIAS, link.alias)
    return _with_length(_ifinfo(RTM_NEWLINK, CHANGE, seq, up, IFF_UP) + body)


def set_link(link: LinkSpec, seq: int) -> bytes:
    """``RTM_NEWLINK`` on the link named ``link.name``: MTU, and up (or down)."""
    up = IFF_UP if link.up else 0
    body = _str_attr(IFLA_IFNAME, link.name) + _U32_NLA.pack(8, IFLA_MTU, link.mtu)
    return _with_length(_ifinfo(RTM_NEWLINK, CHANGE, seq, up, IFF_UP) + body)


def delete_link(link: LinkSpec, seq: int) -> bytes:
    """``RTM_DELLINK`` of the link named ``link.name``."""
    return _with_length(_ifinfo(RTM_DELLINK, CHANGE, seq, 0, 0) + _str_attr(IFLA_IFNAME, link.name))


@dataclass(frozen=True, slots=True)
class DumpedLink:
    """One link of an ``RTM_GETLINK`` dump: what ``NetlinkKernel`` needs of it.

    ``spec`` is set for an ipip link that reports both endpoints (``tunl0``'s are 0.0.0.0), its
    ``vrf`` left None (the master is ``master``, an index); ``table`` is a VRF device's table.
    """

    index: int
    name: str
    kind: str | None
    up: bool
    alias: str
    master: int | None
    table: int | None
    spec: LinkSpec | None


def _asciiz(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_link(body: bytes | memoryview) -> DumpedLink | None:
    """An ``RTM_NEWLINK`` body (ifinfomsg + attributes), without pyroute2's ``ifinfmsg`` (same values)."""
    if len(body) < 16:
        return None
    index, ifi_flags = struct.unpack_from("=iI", body, 4)
    name = alias = kind = None
    mtu = master = table = None
    local = remote = None
    for attr, value in _attrs(body, 16):
        if attr == IFLA_IFNAME and name is None:
            name = _asciiz(value)
        elif attr == IFLA_MTU and mtu is None and len(value) >= 4:
            mtu = struct.unpack_from("=I", value)[0]
        elif attr == IFLA_MASTER and master is None and len(value) >= 4:
            master = struct.unpack_from("=I", value)[0]
        elif attr == IFLA_IFALIAS and alias is None:
            alias = _asciiz(value)
        elif attr == IFLA_LINKINFO:
            for info, data in _attrs(value, 0):
                if info == IFLA_INFO_KIND and kind is None:
                    kind = _asciiz(data)
                elif info == IFLA_INFO_DATA:
                    for sub, field in _attrs(data, 0):
                        if kind == "vrf" and sub == IFLA_VRF_TABLE and len(field) >= 4 and table is None:
                            table = struct.unpack_from("=I", field)[0]
                        elif sub == IFLA_IPTUN_LOCAL and len(field) == 4 and local is None:
                            local = IPv4Address(bytes(field))
                        elif sub == IFLA_IPTUN_REMOTE and len(field) == 4 and remote is None:
                            remote = IPv4Address(bytes(field))
    if name is None:
        return None
    up = bool(ifi_flags & IFF_UP)
    spec = None
    if kind == "ipip" and local is not None and remote is not None:
        spec = LinkSpec(name, local, remote, mtu or 0, alias or "", up=up)
    return DumpedLink(index, name, kind, up, alias or "", master, table, spec)


# The socket ------------------------------------------------------------------------------------


def _error(body: memoryview, flags: int) -> NetlinkError:
    """The ``NetlinkError`` (like pyroute2's) of an error ack, with the kernel's reason if it sent one.

    The reason (``NLMSGERR_ATTR_MSG``) follows the request's header when the ack is capped and
    carries TLVs (``NLM_F_CAPPED | NLM_F_ACK_TLVS``); otherwise what follows is the request itself.
    """
    code = -_ERR.unpack_from(body)[0]
    message = None
    if flags & (NLM_F_CAPPED | NLM_F_ACK_TLVS) == NLM_F_CAPPED | NLM_F_ACK_TLVS:
        for kind, value in _attrs(body, _ERR.size):
            if kind == NLMSGERR_ATTR_MSG:
                message = f"{os.strerror(code)}: {_asciiz(value)}"
    return NetlinkError(code, message)


class NetlinkChannel:
    """A raw netlink socket (``NETLINK_ROUTE`` or ``NETLINK_XFRM``) for batches and dumps.

    Opened in the calling thread's namespace or in ``netns`` (through pyroute2's helper). Acks
    are capped (``NETLINK_CAP_ACK``: a failed request is not echoed back) and extended
    (``NETLINK_EXT_ACK``: the kernel's reason string is kept in the error).
    """

    def __init__(self, protocol: int, netns: str | None = None, timeout: float = 60.0) -> None:
        if netns is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        else:
            from pyroute2.netns import create_socket  # noqa: PLC0415 - only for another namespace

            sock = create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, protocol, flags=0)
        try:
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                with contextlib.suppress(OSError):  # older kernels: full acks, no reasons
                    sock.setsockopt(SOL_NETLINK, option, 1)
            sock.bind((0, 0))
            sock.settimeout(timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        self._buf = bytearray(1 << 18)

    def close(self) -> None:
        self._sock.close()

    def seq(self) -> int:
        """The next sequence number (never 0: the kernel's own notifications carry 0)."""
        self._seq = self._seq % 0xFFFFFFFF + 1
        return self._seq

    def _messages(self) -> Iterator[tuple[int, int, int, memoryview]]:
        """(type, flags, seq, body) of the messages in the next datagram."""
        n = self._sock.recv_into(self._buf)
        view = memoryview(self._buf)[:n]
        offset = 0
        while offset + 16 <= n:
            length, kind, flags, seq, _ = _HDR.unpack_from(view, offset)
            if length < 16 or offset + length > n:
                break
            yield kind, flags, seq, view[offset + 16 : offset + length]
            offset += _pad(length)

    def exchange(self, messages: Sequence[bytes], seqs: Sequence[int]) -> list[Exception | None]:
        """Send ``messages`` (each built with ``NLM_F_ACK`` and its ``seqs`` entry), :data:`BATCH` per
        send, and return one result per message: None, or the error the kernel acknowledged it with.

        The kernel handles a datagram's messages in order and acks each; an error on one does not
        stop the others. If the exchange itself fails, every message not yet acknowledged gets
        that error.
        """
        results: list[Exception | None] = [None] * len(messages)
        for start in range(0, len(messages), BATCH):
            where = {seqs[i]: i for i in range(start, min(start + BATCH, len(messages)))}
            try:
                self._sock.sendall(b"".join(messages[start : start + BATCH]))
                while where:
                    for kind, flags, seq, body in self._messages():
                        if kind != NLMSG_ERROR or seq not in where:
                            continue  # a stale reply of an abandoned exchange
                        index = where.pop(seq)
                        if _ERR.unpack_from(body)[0]:
                            results[index] = _error(body, flags)
            except OSError as exc:
                for index in where.values():
                    results[index] = exc
                for index in range(start + BATCH, len(messages)):
                    results[index] = exc
                break
        return results

    def dump(self, kind: int, body: bytes, tries: int = 5) -> list[tuple[int, memoryview]]:
        """(type, body) of every message of a dump; retried if the kernel flags it interrupted."""
        for _ in range(tries):
            seq = self.seq()
            self._sock.sendall(dump_request(kind, body, seq))
            bodies: list[tuple[int, memoryview]] = []
            interrupted = False
            done = False
            while not done:
                for reply, flags, rseq, data in self._messages():
                    if rseq != seq:
                        continue
                    if reply == NLMSG_DONE:
                        done = True
                        break
                    if reply == NLMSG_ERROR:
                        raise _error(data, flags)
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    # The receive buffer is reused by the next datagram: keep a copy.
                    bodies.append((reply, memoryview(bytes(data))))
            if not interrupted:
                return bodies
        raise NetlinkError(errno.EINTR, "dump interrupted again and again (the kernel state kept changing)")
