"""The netlink adapter: dumps and changes links and routes (pyroute2) and XFRM state (ce_runtime.xfrm).

Never shells out. Every read is a dump, so the reconciler works from what the kernel holds now.
Routes we add carry the routing protocol number :data:`RTPROT_CE`; others are not reported.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

from pyroute2 import IPRoute

from ce_runtime.model import (
    AddLink,
    AddPolicy,
    AddRoute,
    AddSa,
    DelLink,
    DelPolicy,
    DelRoute,
    DelSa,
    KernelState,
    LinkSpec,
    Op,
    RouteSpec,
    SetLink,
)
from ce_runtime.xfrm import XfrmSocket

__all__ = ["RTPROT_CE", "NetlinkKernel"]

RTPROT_CE: Final = 0xCE
IFF_UP: Final = 1
RT_SCOPE_LINK: Final = 253


class NetlinkKernel:
    """A :class:`ce_runtime.runtime.KernelPort` on the current network namespace (or ``netns``)."""

    def __init__(self, netns: str | None = None) -> None:
        self._ipr: Any = IPRoute(netns=netns) if netns else IPRoute()
        self._xfrm = XfrmSocket(netns=netns)
        self._indexes: dict[str, int] = {}  # refreshed by every read()

    def close(self) -> None:
        self._ipr.close()
        self._xfrm.close()

    def __enter__(self) -> NetlinkKernel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _links(self) -> tuple[set[LinkSpec], dict[int, str]]:
        links: set[LinkSpec] = set()
        names: dict[int, str] = {}
        self._indexes.clear()
        for msg in self._ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            names[msg["index"]] = name
            self._indexes[name] = msg["index"]
            if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "ipip":
                continue
            local = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_IPIP_LOCAL")
            remote = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_IPIP_REMOTE")
            if not local or not remote:
                continue  # the fallback device tunl0, or a tunnel without endpoints: never ours
            links.add(
                LinkSpec(
                    name=name,
                    local=IPv4Address(local),
                    remote=IPv4Address(remote),
                    mtu=int(msg.get_attr("IFLA_MTU")),
                    alias=msg.get_attr("IFLA_IFALIAS") or "",
                    up=bool(msg["flags"] & IFF_UP),
                )
            )
        return links, names

    def read(self) -> KernelState:
        links, names = self._links()
        routes: set[RouteSpec] = set()
        for msg in self._ipr.get_routes(family=socket.AF_INET):
            if msg["proto"] != RTPROT_CE or msg.get_attr("RTA_OIF") not in names:
                continue
            dst = msg.get_attr("RTA_DST") or "0.0.0.0"  # noqa: S104 - a default route, not a bind
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            routes.add(
                RouteSpec(IPv4Network(f"{dst}/{msg['dst_len']}"), names[msg.get_attr("RTA_OIF")], table)
            )
        return KernelState(
            links=frozenset(links),
            sas=frozenset(self._xfrm.dump_sas()),
            policies=frozenset(self._xfrm.dump_policies()),
            routes=frozenset(routes),
        )

    def index(self, name: str) -> int:
        """The interface index of link ``name`` (from the last dump, else one request)."""
        if name not in self._indexes:
            (reply,) = self._ipr.link("get", ifname=name)  # one request, not a dump
            self._indexes[name] = int(reply["index"])
        return self._indexes[name]

    def apply(self, op: Op) -> None:
        match op:
            case AddLink(link):
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
                    "set", index=self.index(link.name), ifalias=link.alias, state="up" if link.up else "down"
                )
            case SetLink(link):
                self._ipr.link(
                    "set", index=self.index(link.name), mtu=link.mtu, state="up" if link.up else "down"
                )
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
