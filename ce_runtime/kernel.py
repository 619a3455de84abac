"""The netlink adapter: dumps and changes links, routes and XFRM state.

Never shells out. Every read is a dump, so the reconciler works from what the kernel holds now.
Routes we add carry the routing protocol number :data:`RTPROT_CE`; others are not reported.

Two paths: :meth:`NetlinkKernel.apply` carries out one operation through pyroute2
(``IPRoute``) and :class:`ce_runtime.xfrm.XfrmSocket`; :meth:`NetlinkKernel.apply_all` sends a
run of links and XFRM operations in batches of precompiled messages (:mod:`ce_runtime.wire`),
and falls back to ``apply`` for the rest (routes, VRFs, links entering or leaving a VRF). Links,
SAs and policies are dumped with the lean decoders of :mod:`ce_runtime.wire`, routes through pyroute2.

VRF devices are all reported (with their table, alias and slaves); ownership is the planner's
call. A link is only ever enslaved to a VRF whose alias marks it as ours, checked here at the
moment of enslaving, so a name clash can never put our tunnels into someone else's VRF.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Network
from typing import Any, Final

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ce_runtime import wire
from ce_runtime.model import (
    ALIAS_PREFIX,
    AddLink,
    AddPolicy,
    AddRoute,
    AddSa,
    AddVrf,
    DelLink,
    DelPolicy,
    DelRoute,
    DelSa,
    DelVrf,
    KernelState,
    LinkSpec,
    Op,
    RouteSpec,
    SetLink,
    SetVrf,
    VrfSpec,
)
from ce_runtime.wire import NetlinkChannel
from ce_runtime.xfrm import MsgType, XfrmSocket

__all__ = ["RTPROT_CE", "NetlinkKernel"]

RTPROT_CE: Final = 0xCE
RT_SCOPE_LINK: Final = 253
RTN_UNREACHABLE: Final = 7
#: The metric of a VRF's unreachable default: the highest one, as the kernel's vrf.rst advises.
SEAL_METRIC: Final = 0xFF000000

_Step = Callable[[int], bytes]  # a message builder, given its sequence number


class NetlinkKernel:
    """A :class:`ce_runtime.runtime.KernelPort` on the current network namespace (or ``netns``)."""

    def __init__(self, netns: str | None = None) -> None:
        self._ipr: Any = IPRoute(netns=netns) if netns else IPRoute()
        self._xfrm = XfrmSocket(netns=netns)
        self._rt = NetlinkChannel(wire.NETLINK_ROUTE, netns)
        self._xf = NetlinkChannel(wire.NETLINK_XFRM, netns)
        self._indexes: dict[str, int] = {}  # refreshed by every read()

    def close(self) -> None:
        self._ipr.close()
        self._xfrm.close()
        self._rt.close()
        self._xf.close()

    def __enter__(self) -> NetlinkKernel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _links(self) -> tuple[set[LinkSpec], set[VrfSpec], dict[int, str]]:
        dumped_links: list[wire.DumpedLink] = []
        names: dict[int, str] = {}
        self._indexes.clear()
        for kind, body in self._rt.dump(wire.RTM_GETLINK, wire.LINK_DUMP):
            dumped = wire.decode_link(body) if kind == wire.RTM_NEWLINK else None
            if dumped is None:
                continue
            names[dumped.index] = dumped.name
            self._indexes[dumped.name] = dumped.index
            dumped_links.append(dumped)
        slaves: dict[int, set[str]] = {}
        for dumped in dumped_links:
            if dumped.master:
                slaves.setdefault(dumped.master, set()).add(dumped.name)
        links: set[LinkSpec] = set()
        vrfs: set[VrfSpec] = set()
        for dumped in dumped_links:
            if dumped.spec is not None:
                # Enslaved to anything (a VRF or not): reported by name, the planner decides.
                master = dumped.master
                links.add(
                    dataclasses.replace(dumped.spec, vrf=names.get(master, f"#{master}"))
                    if master
                    else dumped.spec
                )
            elif dumped.kind == "vrf":
                try:
                    vrfs.add(
                        VrfSpec(
                            dumped.name,
                            dumped.table or 0,
                            dumped.alias,
                            up=dumped.up,
                            slaves=frozenset(slaves.get(dumped.index, ())),
                        )
                    )
                except ValueError:
                    continue  # a VRF on a reserved table or with a strange name: never one of ours
        return links, vrfs, names

    def read(self) -> KernelState:
        links, vrfs, names = self._links()
        routes: set[RouteSpec] = set()
        sealed: set[int] = set()  # tables holding our unreachable default
        for msg in self._ipr.get_routes(family=socket.AF_INET):
            if msg["proto"] != RTPROT_CE:
                continue
            if msg["type"] == RTN_UNREACHABLE and msg["dst_len"] == 0:
                sealed.add(msg.get_attr("RTA_TABLE") or msg["table"])
                continue
            if msg.get_attr("RTA_OIF") not in names:
                continue
            dst = msg.get_attr("RTA_DST") or "0.0.0.0"  # noqa: S104 - a default route, not a bind
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            routes.add(
                RouteSpec(IPv4Network(f"{dst}/{msg['dst_len']}"), names[msg.get_attr("RTA_OIF")], table)
            )
        return KernelState(
            links=frozenset(links),
            sas=frozenset(
                sa
                for kind, body in self._xf.dump(MsgType.GETSA, wire.SA_DUMP)
                if kind == MsgType.NEWSA and (sa := wire.decode_sa(body)) is not None
            ),
            policies=frozenset(
                policy
                for kind, body in self._xf.dump(MsgType.GETPOLICY, wire.POLICY_DUMP)
                if kind == MsgType.NEWPOLICY and (policy := wire.decode_policy(body)) is not None
            ),
            routes=frozenset(routes),
            vrfs=frozenset(dataclasses.replace(v, sealed=v.table in sealed) for v in vrfs),
        )

    def index(self, name: str) -> int:
        """The interface index of link ``name`` (from the last dump, else one request)."""
        if name not in self._indexes:
            (reply,) = self._ipr.link("get", ifname=name)  # one request, not a dump
            self._indexes[name] = int(reply["index"])
        return self._indexes[name]

    def _our_vrf(self, name: str | None) -> int:
        """The index of VRF ``name`` if it is ours (kind vrf, our alias), else raise; 0 for None."""
        if name is None:
            return 0
        (reply,) = self._ipr.link("get", ifname=name)  # one request: now, not the round's dump
        kind = reply.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind != "vrf" or not (reply.get_attr("IFLA_IFALIAS") or "").startswith(ALIAS_PREFIX):
            raise PermissionError(f"{name} is not a VRF of ours: no link is enslaved to it")
        return int(reply["index"])

    def _seal(self, table: int, sealed: bool) -> None:
        """Add (idempotently) or remove our ``unreachable default`` in ``table``."""
        kwargs = {"dst": "0.0.0.0/0", "table": table, "type": "unreachable", "proto": RTPROT_CE,
                  "priority": SEAL_METRIC}  # fmt: skip
        if sealed:
            self._ipr.route("replace", **kwargs)
            return
        try:
            self._ipr.route("del", **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:
                raise

    def apply(self, op: Op) -> None:
        match op:
            case AddLink(link):
                # The VRF is checked first: a link created but not marked would be orphaned.
                extra = {} if link.vrf is None else {"master": self._our_vrf(link.vrf)}
                self._ipr.link(
                    "add",
                    ifname=link.name,
                    kind="ipip",
                    ipip_local=str(link.local),
                    ipip_remote=str(link.remote),
                    ipip_ttl=64,
                    mtu=link.mtu,
                )
                self._indexes.pop(link.name, None)
                # The alias is only taken by a "set" (the kernel ignores IFLA_IFALIAS on creation).
                self._ipr.link(
                    "set",
                    index=self.index(link.name),
                    ifalias=link.alias,
                    state="up" if link.up else "down",
                    **extra,
                )
            case SetLink(link):
                self._ipr.link(
                    "set",
                    index=self.index(link.name),
                    mtu=link.mtu,
                    state="up" if link.up else "down",
                    master=self._our_vrf(link.vrf),  # 0: released
                )
            case AddVrf(vrf):
                self._ipr.link("add", ifname=vrf.name, kind="vrf", vrf_table=vrf.table)
                self._indexes.pop(vrf.name, None)
                self._ipr.link(
                    "set", index=self.index(vrf.name), ifalias=vrf.alias, state="up" if vrf.up else "down"
                )
                self._seal(vrf.table, vrf.sealed)
            case SetVrf(vrf):
                self._ipr.link("set", index=self.index(vrf.name), state="up" if vrf.up else "down")
                self._seal(vrf.table, vrf.sealed)
            case DelVrf(vrf):
                self._seal(vrf.table, False)  # not tied to the device: it would outlive it
                self._ipr.link("del", index=self.index(vrf.name))
                self._indexes.pop(vrf.name, None)
            case DelLink(link):
                self._ipr.link("del", index=self.index(link.name))
                self._indexes.pop(link.name, None)
            case AddSa(sa):
                self._xfrm.add_sa(sa)
            case DelSa(sa):
                self._xfrm.delete_sa(sa)
            case AddPolicy(policy):
                self._xfrm.add_policy(policy)
            case DelPolicy(policy):
                self._xfrm.delete_policy(policy)
            case AddRoute(route) | DelRoute(route):
                self._ipr.route(
                    "add" if isinstance(op, AddRoute) else "del",
                    dst=str(route.dst),
                    oif=self.index(route.link),
                    table=route.table,
                    proto=RTPROT_CE,
                    scope=RT_SCOPE_LINK,
                )

    def _steps(self, op: Op) -> tuple[NetlinkChannel, list[_Step]] | None:
        """The messages of ``op`` in order (each sent only if the one before succeeded), or None."""
        match op:
            case AddSa(sa):
                return self._xf, [partial(wire.new_sa, sa)]
            case DelSa(sa):
                return self._xf, [partial(wire.delete_sa, sa)]
            case AddPolicy(policy):
                return self._xf, [partial(wire.new_policy, policy)]
            case DelPolicy(policy):
                return self._xf, [partial(wire.delete_policy, policy)]
            case AddLink(link) if link.vrf is None:
                # The alias (ours: what marks the link as ours) only after the create succeeded,
                # never on a link of that name that someone else made.
                return self._rt, [partial(wire.new_link, link), partial(wire.set_link_alias, link)]
            case DelLink(link):
                return self._rt, [partial(wire.delete_link, link)]
            case _:
                # Routes (need the link's index), VRFs, links entering a VRF and link changes (which
                # may release a link from a VRF: IFLA_MASTER): one at a time through apply().
                return None

    def apply_all(self, ops: Sequence[Op]) -> list[Exception | None]:
        """Carry out ``ops`` in order: runs of links and XFRM operations in batches, the rest one by one.

        Each operation gets its own result (None or the error the kernel acknowledged it with), so
        that the reconciler can hold back the peer whose operation failed and nobody else.
        """
        results: list[Exception | None] = [None] * len(ops)
        run: list[tuple[int, list[_Step]]] = []
        run_channel: NetlinkChannel | None = None
        for i, op in enumerate(ops):
            if isinstance(op, AddLink | DelLink):
                self._indexes.pop(op.link.name, None)
            steps = self._steps(op)
            if steps is None or steps[0] is not run_channel:
                if run_channel is not None:
                    self._exchange(run_channel, run, results)
                run, run_channel = [], None
            if steps is None:
                try:
                    self.apply(op)
                except Exception as exc:  # a netlink error of any kind fails this op, never the run
                    results[i] = exc
                continue
            run_channel = steps[0]
            run.append((i, steps[1]))
        if run_channel is not None:
            self._exchange(run_channel, run, results)
        return results

    @staticmethod
    def _exchange(
        channel: NetlinkChannel, run: list[tuple[int, list[_Step]]], results: list[Exception | None]
    ) -> None:
        """Send the first message of every op of ``run``, then the second of those that succeeded ..."""
        stage = 0
        while run:
            seqs = [channel.seq() for _ in run]
            outcome = channel.exchange(
                [steps[stage](seq) for (_, steps), seq in zip(run, seqs, strict=True)], seqs
            )
            following: list[tuple[int, list[_Step]]] = []
            for (i, steps), error in zip(run, outcome, strict=True):
                if error is not None:
                    results[i] = error
                elif stage + 1 < len(steps):
                    following.append((i, steps))
            run = following
            stage += 1
