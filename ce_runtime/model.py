"""Kernel objects of the CE tunnels, ownership, and the planner (sans-IO).

The planner compares a desired :class:`KernelState` with the actual one (dumped from the kernel,
never remembered) and returns the operations that turn one into the other. It only ever plans
operations on objects that are *ours* (:class:`Ownership`); everything else is invisible to it.

Order (draft-ietf-l3vpn-ce-based-02 section 3.4: "the set-up of one direction MUST be accompanied
by the set-up of the reverse direction"): when building, SAs of both directions first, then the
policies that require them, then the link and its routes; when tearing down, the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from ce_runtime.xfrm import PolicySpec, SaSpec

__all__ = [
    "ALIAS_PREFIX",
    "LINK_PREFIX",
    "AddLink",
    "AddPolicy",
    "AddRoute",
    "AddSa",
    "DelLink",
    "DelPolicy",
    "DelRoute",
    "DelSa",
    "KernelState",
    "LinkSpec",
    "Op",
    "Ownership",
    "RouteSpec",
    "SetLink",
    "apply_to_model",
    "plan",
]

LINK_PREFIX: Final = "ce"
ALIAS_PREFIX: Final = "ce-autoconf "


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """An ipip link ``name`` from ``local`` to ``remote`` (RFC 2003), administratively up."""

    name: str
    local: IPv4Address
    remote: IPv4Address
    mtu: int
    alias: str
    up: bool = True
    table: int | None = None  # the VRF's table, if the link is enslaved to one (not implemented yet)

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 15:
            raise ValueError(f"link name {self.name!r}: 1 to 15 characters")
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu}")

    @property
    def shape(self) -> tuple[str, IPv4Address, IPv4Address, str]:
        """What cannot change without re-creating the link."""
        return (self.name, self.local, self.remote, self.alias)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A VPN-space route: ``dst`` through the tunnel ``link``, in routing ``table``."""

    dst: IPv4Network
    link: str
    table: int = 254


@dataclass(frozen=True, slots=True)
class KernelState:
    links: frozenset[LinkSpec] = frozenset()
    sas: frozenset[SaSpec] = frozenset()
    policies: frozenset[PolicySpec] = frozenset()
    routes: frozenset[RouteSpec] = frozenset()


@dataclass(frozen=True, slots=True)
class Ownership:
    """How our objects are recognised in a kernel shared with others.

    Links: name starts with ``ce`` *and* the interface alias starts with ``ce-autoconf ``.
    SAs: reqid in ``[reqid_base, reqid_base + 2**24)``. Policies: that reqid range in the
    template *and* our priority. Routes: our routing protocol number (set by the adapter).
    """

    reqid_base: int = 0xCE000000
    priority: int = 0xCE00

    def link(self, link: LinkSpec) -> bool:
        return link.name.startswith(LINK_PREFIX) and link.alias.startswith(ALIAS_PREFIX)

    def reqid(self, reqid: int) -> bool:
        return self.reqid_base <= reqid < self.reqid_base + (1 << 24)

    def sa(self, sa: SaSpec) -> bool:
        return self.reqid(sa.reqid)

    def policy(self, policy: PolicySpec) -> bool:
        return self.reqid(policy.reqid) and policy.priority == self.priority


@dataclass(frozen=True, slots=True)
class AddLink:
    link: LinkSpec


@dataclass(frozen=True, slots=True)
class SetLink:
    """MTU or state changed: adjusted in place, the link (and its routes) stay."""

    link: LinkSpec


@dataclass(frozen=True, slots=True)
class DelLink:
    link: LinkSpec


@dataclass(frozen=True, slots=True)
class AddSa:
    sa: SaSpec


@dataclass(frozen=True, slots=True)
class DelSa:
    sa: SaSpec


@dataclass(frozen=True, slots=True)
class AddPolicy:
    policy: PolicySpec


@dataclass(frozen=True, slots=True)
class DelPolicy:
    policy: PolicySpec


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: RouteSpec


@dataclass(frozen=True, slots=True)
class DelRoute:
    route: RouteSpec


Op = AddLink | SetLink | DelLink | AddSa | DelSa | AddPolicy | DelPolicy | AddRoute | DelRoute


def _sa_key(sa: SaSpec) -> tuple[object, ...]:
    return (sa.dst, sa.spi, sa.mark)


def plan(desired: KernelState, actual: KernelState, owner: Ownership) -> list[Op]:
    """The operations that make our part of ``actual`` equal to ``desired``.

    ``desired`` must consist of owned objects only (ValueError otherwise): the planner never
    creates what it could not later recognise and remove.
    """
    foreign = (
        [x for x in desired.links if not owner.link(x)]
        + [x for x in desired.sas if not owner.sa(x)]
        + [x for x in desired.policies if not owner.policy(x)]
    )
    if foreign:
        raise ValueError(f"desired objects that would not be recognised as ours: {foreign[:3]}")
    links = {x for x in actual.links if owner.link(x)}
    sas = {x for x in actual.sas if owner.sa(x)}
    policies = {x for x in actual.policies if owner.policy(x)}
    our_links = {x.name for x in links} | {x.name for x in desired.links}
    routes = {x for x in actual.routes if x.link in our_links}

    # The kernel keys SAs by (daddr, SPI, mark), policies by (selector, dir, mark), links by name:
    # an object with the same key but other contents is deleted before its replacement is added.
    want_sa = {_sa_key(x): x for x in desired.sas}
    del_sas = [x for x in sas if want_sa.get(_sa_key(x)) != x]
    add_sas = [x for x in desired.sas if x not in sas]
    want_pol = {(x.ident, x.mark): x for x in desired.policies}
    del_pols = [x for x in policies if want_pol.get((x.ident, x.mark)) != x]
    add_pols = [x for x in desired.policies if x not in policies]
    want_link = {x.name: x for x in desired.links}
    del_links = [x for x in links if x.name not in want_link or want_link[x.name].shape != x.shape]
    have_link = {x.name: x for x in links if x not in del_links}
    add_links = [x for x in desired.links if x.name not in have_link]
    set_links = [x for x in desired.links if x.name in have_link and have_link[x.name] != x]
    gone = {x.name for x in del_links}
    del_routes = [x for x in routes if x not in desired.routes and x.link not in gone]
    add_routes = [x for x in desired.routes if x not in routes or x.link in gone]

    ops: list[Op] = []
    ops += [DelRoute(x) for x in sorted(del_routes, key=repr)]
    ops += [DelLink(x) for x in sorted(del_links, key=repr)]
    ops += [DelPolicy(x) for x in sorted(del_pols, key=repr)]
    ops += [DelSa(x) for x in sorted(del_sas, key=repr)]
    ops += [AddSa(x) for x in sorted(add_sas, key=repr)]
    ops += [AddPolicy(x) for x in sorted(add_pols, key=repr)]
    ops += [AddLink(x) for x in sorted(add_links, key=repr)]
    ops += [SetLink(x) for x in sorted(set_links, key=repr)]
    ops += [AddRoute(x) for x in sorted(add_routes, key=repr)]
    return ops


def apply_to_model(state: KernelState, ops: list[Op]) -> KernelState:
    """What the kernel would hold after ``ops`` (a model for tests; raises on impossible operations)."""
    links = {x.name: x for x in state.links}
    sas = {_sa_key(x): x for x in state.sas}
    policies = {(x.ident, x.mark): x for x in state.policies}
    routes = set(state.routes)
    for op in ops:
        match op:
            case AddLink(link):
                if link.name in links:
                    raise FileExistsError(link.name)
                links[link.name] = link
            case SetLink(link):
                links[link.name] = link
            case DelLink(link):
                del links[link.name]
                routes = {r for r in routes if r.link != link.name}  # the kernel drops them with the link
            case AddSa(sa):
                if _sa_key(sa) in sas:
                    raise FileExistsError(sa)
                sas[_sa_key(sa)] = sa
            case DelSa(sa):
                del sas[_sa_key(sa)]
            case AddPolicy(policy):
                if (policy.ident, policy.mark) in policies:
                    raise FileExistsError(policy)
                policies[(policy.ident, policy.mark)] = policy
            case DelPolicy(policy):
                del policies[(policy.ident, policy.mark)]
            case AddRoute(route):
                if route.link not in links:
                    raise LookupError(route)
                routes.add(route)
            case DelRoute(route):
                routes.remove(route)
    return KernelState(
        frozenset(links.values()), frozenset(sas.values()), frozenset(policies.values()), frozenset(routes)
    )
