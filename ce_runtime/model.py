"""Kernel objects of the CE tunnels, ownership, and the planner (sans-IO).

The planner compares a desired :class:`KernelState` with the actual one (dumped from the kernel,
never remembered) and returns the operations that turn one into the other. It only ever plans
operations on objects that are *ours* (:class:`Ownership`); everything else is invisible to it.

Order (draft-ietf-l3vpn-ce-based-02 section 3.4: "the set-up of one direction MUST be accompanied
by the set-up of the reverse direction"): when building, SAs of both directions first, then the
policies that require them, then the link and its routes; when tearing down, the reverse.

VRF devices (section 2.2: a separate routing table for VPN space) are owned like links (alias
``ce-autoconf ``): they are created before the links that are enslaved to them and deleted
after those links were deleted or released. A link's routes are deleted before its master
changes and added again afterwards (the kernel flushes them when it cycles the link).
A *stale* SA (one whose kernel key no desired SA takes) is deleted only after the new SAs
were added: a rekey is make-before-break.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from ce_runtime.xfrm import Action, PolicySpec, SaSpec

__all__ = [
    "ALIAS_PREFIX",
    "LINK_PREFIX",
    "AddLink",
    "AddPolicy",
    "AddRoute",
    "AddSa",
    "AddVrf",
    "DelLink",
    "DelPolicy",
    "DelRoute",
    "DelSa",
    "DelVrf",
    "KernelState",
    "LinkSpec",
    "Op",
    "Ownership",
    "RouteSpec",
    "SetLink",
    "SetVrf",
    "VrfSpec",
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
    vrf: str | None = None  # the master device (a VRF of ours) the link is enslaved to, by name

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 15:
            raise ValueError(f"link name {self.name!r}: 1 to 15 characters")
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu}")

    @property
    def shape(self) -> tuple[str, IPv4Address, IPv4Address, str]:
        """What cannot change without re-creating the link."""
        return (self.name, self.local, self.remote, self.alias)


#: Routing tables a VRF must not use: unspec, default, main, local (``/etc/iproute2/rt_tables``).
RESERVED_TABLES: Final = frozenset({0, 253, 254, 255})


@dataclass(frozen=True, slots=True)
class VrfSpec:
    """A VRF device ``name`` bound to routing ``table`` (section 2.2: VPN space apart from provider space)."""

    name: str
    table: int
    alias: str
    up: bool = True
    #: An ``unreachable default`` route of ours (highest metric) in ``table``: a lookup that finds
    #: nothing in the VRF stops there instead of falling through to the next rule, i.e. to the
    #: main table and provider space (the kernel's vrf.rst recommends it; observed in the VM).
    sealed: bool = True
    #: Every device enslaved to it, as dumped (not compared). Someone else's device in it (the
    #: LAN interface the operator put there) holds an unwanted VRF of ours back from deletion:
    #: deleting it would release that device into the main table, i.e. into provider space.
    slaves: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 15 or "/" in self.name or " " in self.name:
            raise ValueError(f"VRF name {self.name!r}: 1 to 15 characters, no '/' or space")
        if not 0 < self.table < 1 << 32 or self.table in RESERVED_TABLES:
            raise ValueError(f"VRF {self.name}: table {self.table} is reserved or out of range")

    @property
    def shape(self) -> tuple[str, int, str]:
        """What cannot change without re-creating the device (the kernel cannot move a VRF's table)."""
        return (self.name, self.table, self.alias)


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
    vrfs: frozenset[VrfSpec] = frozenset()


@dataclass(frozen=True, slots=True)
class Ownership:
    """How our objects are recognised in a kernel shared with others.

    Links: name starts with ``ce`` *and* the interface alias starts with ``ce-autoconf ``.
    VRF devices: the alias starts with ``ce-autoconf `` (the operator names them).
    SAs: reqid in ``[reqid_base, reqid_base + 2**24)``. Policies: that reqid range in the
    template *and* our priority; guards (block policies, no template): ``guard_priority``.
    Routes: our routing protocol number (set by the adapter).
    """

    reqid_base: int = 0xCE000000
    priority: int = 0xCE00
    #: Guards must lose to every policy that protects a pair, ours (``priority``) and charon's
    #: (:data:`ce_runtime.ike.config.IKE_PRIORITY`): the kernel picks the lowest value.
    guard_priority: int = 0xCFFF

    def link(self, link: LinkSpec) -> bool:
        return link.name.startswith(LINK_PREFIX) and link.alias.startswith(ALIAS_PREFIX)

    def vrf(self, vrf: VrfSpec) -> bool:
        return vrf.alias.startswith(ALIAS_PREFIX)

    def reqid(self, reqid: int) -> bool:
        return self.reqid_base <= reqid < self.reqid_base + (1 << 24)

    def sa(self, sa: SaSpec) -> bool:
        return self.reqid(sa.reqid)

    def policy(self, policy: PolicySpec) -> bool:
        if policy.action == Action.BLOCK:
            return policy.priority == self.guard_priority
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
class AddVrf:
    vrf: VrfSpec


@dataclass(frozen=True, slots=True)
class SetVrf:
    """Up/down or the seal changed: adjusted in place (re-creating it would release every slave)."""

    vrf: VrfSpec


@dataclass(frozen=True, slots=True)
class DelVrf:
    """Deleting a VRF releases its slaves (the kernel does); their routes go with that."""

    vrf: VrfSpec


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


Op = (
    AddLink
    | SetLink
    | DelLink
    | AddVrf
    | SetVrf
    | DelVrf
    | AddSa
    | DelSa
    | AddPolicy
    | DelPolicy
    | AddRoute
    | DelRoute
)


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
        + [x for x in desired.vrfs if not owner.vrf(x)]
    )
    if foreign:
        raise ValueError(f"desired objects that would not be recognised as ours: {foreign[:3]}")
    want_vrf = {x.name: x for x in desired.vrfs}
    unknown = sorted({x.vrf for x in desired.links if x.vrf is not None} - set(want_vrf))
    if unknown:
        raise ValueError(f"links enslaved to VRFs that are not desired: {unknown}")
    links = {x for x in actual.links if owner.link(x)}
    sas = {x for x in actual.sas if owner.sa(x)}
    policies = {x for x in actual.policies if owner.policy(x)}
    vrfs = {x for x in actual.vrfs if owner.vrf(x)}
    our_links = {x.name for x in links} | {x.name for x in desired.links}
    routes = {x for x in actual.routes if x.link in our_links}

    # The kernel keys SAs by (daddr, SPI, mark), policies by (selector, dir, mark), links and VRFs
    # by name: an object with the same key but other contents is deleted before its replacement
    # is added. A stale SA whose key nothing takes is deleted after the adds (make-before-break).
    want_sa = {_sa_key(x): x for x in desired.sas}
    replaced_sas = [x for x in sas if _sa_key(x) in want_sa and want_sa[_sa_key(x)] != x]
    stale_sas = [x for x in sas if _sa_key(x) not in want_sa]
    add_sas = [x for x in desired.sas if x not in sas]
    want_pol = {(x.ident, x.mark): x for x in desired.policies}
    del_pols = [x for x in policies if want_pol.get((x.ident, x.mark)) != x]
    add_pols = [x for x in desired.policies if x not in policies]
    del_vrfs = [x for x in vrfs if x.name not in want_vrf or want_vrf[x.name].shape != x.shape]
    kept = {x.name for x in desired.links} | {x.name for x in links}
    held = [x for x in del_vrfs if x.slaves - kept]  # someone else's device is in it: left alone
    del_vrfs = [x for x in del_vrfs if x not in held]
    have_vrf = {x.name: x for x in vrfs if x not in del_vrfs}
    have_vrf.update({x.name: want_vrf.get(x.name, x) for x in held})  # nothing planned for them
    add_vrfs = [x for x in desired.vrfs if x.name not in have_vrf]
    set_vrfs = [x for x in desired.vrfs if x.name in have_vrf and have_vrf[x.name] != x]
    released = {x.name for x in del_vrfs}  # deleting a VRF releases its slaves
    want_link = {x.name: x for x in desired.links}
    del_links = [x for x in links if x.name not in want_link or want_link[x.name].shape != x.shape]
    dead = {x.name for x in del_links}  # by name: a list look-up here made a teardown quadratic
    have_link = {x.name: x if x.vrf not in released else _released(x) for x in links if x.name not in dead}
    add_links = [x for x in desired.links if x.name not in have_link]
    set_links = [x for x in desired.links if x.name in have_link and have_link[x.name] != x]
    # A link whose master changes (or whose VRF is deleted) loses its routes: the kernel cycles
    # it. They are deleted first and added again afterwards; a deleted link takes its routes along.
    remastered = {
        x.name for x in links if x.name not in dead and (x.vrf != want_link[x.name].vrf or x.vrf in released)
    }
    del_routes = [
        x for x in routes if x.link not in dead and (x not in desired.routes or x.link in remastered)
    ]
    add_routes = [x for x in desired.routes if x not in routes or x.link in dead | remastered]

    ops: list[Op] = []
    ops += [DelRoute(x) for x in sorted(del_routes, key=repr)]
    ops += [DelLink(x) for x in sorted(del_links, key=repr)]
    ops += [DelVrf(x) for x in sorted(del_vrfs, key=repr)]
    ops += [DelPolicy(x) for x in sorted(del_pols, key=repr)]
    ops += [DelSa(x) for x in sorted(replaced_sas, key=repr)]
    ops += [AddSa(x) for x in sorted(add_sas, key=repr)]
    ops += [DelSa(x) for x in sorted(stale_sas, key=repr)]
    ops += [AddPolicy(x) for x in sorted(add_pols, key=repr)]
    ops += [AddVrf(x) for x in sorted(add_vrfs, key=repr)]
    ops += [SetVrf(x) for x in sorted(set_vrfs, key=repr)]
    ops += [AddLink(x) for x in sorted(add_links, key=repr)]
    ops += [SetLink(x) for x in sorted(set_links, key=repr)]
    ops += [AddRoute(x) for x in sorted(add_routes, key=repr)]
    return ops


def _released(link: LinkSpec) -> LinkSpec:
    return LinkSpec(link.name, link.local, link.remote, link.mtu, link.alias, link.up, None)


def apply_to_model(state: KernelState, ops: list[Op]) -> KernelState:
    """What the kernel would hold after ``ops`` (a model for tests; raises on impossible operations)."""
    links = {x.name: x for x in state.links}
    vrfs = {x.name: x for x in state.vrfs}
    sas = {_sa_key(x): x for x in state.sas}
    policies = {(x.ident, x.mark): x for x in state.policies}
    routes = set(state.routes)

    def flush(name: str) -> set[RouteSpec]:
        return {r for r in routes if r.link != name}

    for op in ops:
        match op:
            case AddLink(link):
                if link.name in links or link.name in vrfs:
                    raise FileExistsError(link.name)
                if link.vrf is not None and link.vrf not in vrfs:
                    raise LookupError(link.vrf)
                links[link.name] = link
            case SetLink(link):
                if link.vrf is not None and link.vrf not in vrfs:
                    raise LookupError(link.vrf)
                if links[link.name].vrf != link.vrf:
                    routes = flush(link.name)  # the kernel cycles a link whose master changes
                links[link.name] = link
            case DelLink(link):
                del links[link.name]
                routes = flush(link.name)  # the kernel drops them with the link
            case AddVrf(vrf):
                if vrf.name in vrfs or vrf.name in links:
                    raise FileExistsError(vrf.name)
                vrfs[vrf.name] = vrf
            case SetVrf(vrf):
                if vrfs[vrf.name].shape != vrf.shape:
                    raise ValueError(f"{vrf.name}: only up/down changes in place")
                vrfs[vrf.name] = vrf
            case DelVrf(vrf):
                del vrfs[vrf.name]
                for slave in [x for x in links.values() if x.vrf == vrf.name]:
                    links[slave.name] = _released(slave)
                    routes = flush(slave.name)
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
                if route in routes:
                    raise FileExistsError(route)
                routes.add(route)
            case DelRoute(route):
                routes.remove(route)
    return KernelState(
        frozenset(links.values()),
        frozenset(sas.values()),
        frozenset(policies.values()),
        frozenset(routes),
        frozenset(vrfs.values()),
    )
