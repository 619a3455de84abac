"""Desired state from the VPN configuration, and the reconciler (sans-IO: the kernel is a port).

``desired_state`` turns "my address, my VPNs and their peers" (what the DHCP client's
``VpnPeersChanged`` events carry) into kernel objects; :class:`Reconciler` dumps the kernel,
plans (:func:`ce_runtime.model.plan`), applies the plan (a run of one kind at a time if the kernel
port batches, else operation by operation), and keeps per-peer failure state: retry after
``min_interval``, then exponential backoff up to ``max_interval``, and after ``alarm_after``
consecutive failures an alarm (log, counter, hook) — section 3.4 of the draft.
Time is passed in; hooks go through a port so that tests need no processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final, Protocol

from ce_runtime.keying import Keying
from ce_runtime.model import (
    ALIAS_PREFIX,
    LINK_PREFIX,
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
    Ownership,
    RouteSpec,
    SetLink,
    VrfSpec,
    plan,
)
from ce_runtime.xfrm import Direction, PolicySpec, SaSpec

__all__ = [
    "ESP_OVERHEAD",
    "Backoff",
    "BatchKernelPort",
    "HookPort",
    "KernelPort",
    "ReconcileReport",
    "Reconciler",
    "RuntimeConfig",
    "VpnConfig",
    "desired_state",
    "link_name",
    "tunnel_mtu",
    "vrf_spec",
]

log = logging.getLogger("ce_runtime")

OUTER_IPV4: Final = 20
# ESP with AES-GCM (RFC 4106): SPI 4 + sequence 4 + IV 8 before, ICV 16 after; the trailer
# (pad length, next header) and padding to 4 octets are accounted for in tunnel_mtu.
ESP_OVERHEAD: Final = 4 + 4 + 8 + 16


def tunnel_mtu(underlay_mtu: int) -> int:
    """The largest inner packet whose ipip+ESP(transport) image fits ``underlay_mtu``.

    Outer length = 20 + 16 + roundup4(inner + 2) + 16 must be <= underlay MTU.
    """
    return ((underlay_mtu - OUTER_IPV4 - ESP_OVERHEAD) & ~3) - 2


def link_name(peer: IPv4Address) -> str:
    """``ce`` + the peer's address in hex: 10 characters, unique per peer, recognisable."""
    return f"{LINK_PREFIX}{peer.packed.hex()}"


@dataclass(frozen=True, slots=True)
class VpnConfig:
    """One VPN of this CE: its peers (provider-space addresses) and the VPN-space routes to configure."""

    vpn_id: int
    peers: frozenset[IPv4Address]
    routes: tuple[tuple[IPv4Network, IPv4Address], ...] = ()  # (VPN prefix, peer CE)
    table: int = 254
    vrf: str | None = None  # section 2.2: the VPN's links enslaved to this VRF, routes in its ``table``
    ike: bool = False  # keyed by charon (ce_runtime.ike): links and routes here, no SA, no policy

    def __post_init__(self) -> None:
        if not 0 <= self.vpn_id < 1 << 24:
            raise ValueError(f"VPN id {self.vpn_id}: 24 bits (it is part of our reqid)")
        if self.vrf is not None:
            vrf_spec(self.vrf, self.table)  # raises on a reserved table or a bad name
        for _, peer in self.routes:
            if peer not in self.peers:
                raise ValueError(f"VPN {self.vpn_id}: route through {peer}, which is not a peer")


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    local: IPv4Address  # this CE's provider-space address
    vpns: tuple[VpnConfig, ...] = ()
    underlay_mtu: int = 1500

    def __post_init__(self) -> None:
        seen: set[IPv4Address] = set()
        provider = {self.local}
        for vpn in self.vpns:
            if vpn.peers & seen:
                raise ValueError(f"peers in two VPNs: {sorted(vpn.peers & seen)} (one tunnel per pair)")
            seen |= vpn.peers
            provider |= vpn.peers
        if self.local in seen:
            raise ValueError("this CE is listed as its own peer")
        tables: dict[str, int] = {}
        for vpn in self.vpns:
            if vpn.vrf is not None and tables.setdefault(vpn.vrf, vpn.table) != vpn.table:
                raise ValueError(f"VRF {vpn.vrf}: two tables ({tables[vpn.vrf]}, {vpn.table})")
        if len(set(tables.values())) != len(tables):
            raise ValueError(f"two VRFs share a routing table: {tables}")
        for vpn in self.vpns:
            if vpn.vrf is None and vpn.table in tables.values():
                raise ValueError(f"VPN {vpn.vpn_id}: table {vpn.table} belongs to a VRF")
        for vpn in self.vpns:
            if vpn.vrf is not None:
                continue  # its own table: VPN space may overlap provider space (section 2.2)
            for prefix, _ in vpn.routes:
                # Section 4: no route between VPN space and provider space. A VPN prefix covering a
                # provider address would also send the tunnel's own packets into the tunnel.
                leaked = [a for a in provider if a in prefix]
                if leaked:
                    raise ValueError(f"VPN {vpn.vpn_id}: route {prefix} covers provider addresses {leaked}")


def vrf_spec(name: str, table: int) -> VrfSpec:
    """Our VRF device ``name`` bound to ``table``, marked as ours by its alias."""
    return VrfSpec(name, table, f"{ALIAS_PREFIX}vrf table={table}")


def desired_state(
    config: RuntimeConfig, keying: Keying, actual_sas: Collection[SaSpec], owner: Ownership
) -> KernelState:
    links: set[LinkSpec] = set()
    sas: set[SaSpec] = set()
    policies: set[PolicySpec] = set()
    routes: set[RouteSpec] = set()
    vrfs: set[VrfSpec] = set()
    mtu = tunnel_mtu(config.underlay_mtu)
    local = config.local
    for vpn in config.vpns:
        if vpn.vrf is not None and vpn.peers:
            vrfs.add(vrf_spec(vpn.vrf, vpn.table))  # only while a VPN has tunnels to put in it
        reqid = owner.reqid_base | vpn.vpn_id
        for peer in vpn.peers:
            if not vpn.ike:
                pair = keying.sas_for(vpn.vpn_id, local, peer, reqid, actual_sas)
                sas.add(pair.outbound)
                sas.update(pair.inbound)
                policies.add(PolicySpec(local, peer, Direction.OUT, reqid, owner.priority))
                policies.add(PolicySpec(peer, local, Direction.IN, reqid, owner.priority))
            else:
                # charon installs the SAs and policies (reqid/priority not ours) and can lose them
                # (crash, restart, reload): our guards keep the link fail-closed meanwhile.
                policies.add(PolicySpec.guard(peer, Direction.OUT, owner.guard_priority))
                policies.add(PolicySpec.guard(peer, Direction.IN, owner.guard_priority))
            links.add(
                LinkSpec(
                    link_name(peer),
                    local,
                    peer,
                    mtu,
                    f"{ALIAS_PREFIX}vpn={vpn.vpn_id} peer={peer}",
                    vrf=vpn.vrf,
                )
            )
        for prefix, peer in vpn.routes:
            routes.add(RouteSpec(prefix, link_name(peer), vpn.table))
    return KernelState(
        frozenset(links), frozenset(sas), frozenset(policies), frozenset(routes), frozenset(vrfs)
    )


class KernelPort(Protocol):
    def read(self) -> KernelState:
        """Dump links, SAs, policies and routes (all of them: ownership is decided here, not there)."""
        ...

    def apply(self, op: Op) -> None:
        """Carry out one operation; raise OSError (or a netlink error) on failure."""
        ...


class BatchKernelPort(KernelPort, Protocol):
    """A kernel port that can carry out many independent operations in one exchange (optional)."""

    def apply_all(self, ops: Sequence[Op]) -> list[Exception | None]:
        """Carry out ``ops`` in order, none depending on another's success; one result per op."""
        ...


class HookPort(Protocol):
    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        """``event``: "up", "down" or "alarm"."""
        ...


@dataclass(slots=True)
class Backoff:
    """Per-peer retry state: min_interval, then doubling up to max_interval; alarm after alarm_after."""

    min_interval: float = 5.0
    max_interval: float = 300.0
    alarm_after: int = 6
    failures: int = 0
    next_try: float = 0.0
    alarmed: bool = False

    def failed(self, now: float) -> bool:
        """Record a failure; True if this one raises the alarm."""
        self.failures += 1
        delay = min(self.max_interval, self.min_interval * 2 ** (self.failures - 1))
        self.next_try = now + delay
        if self.failures >= self.alarm_after and not self.alarmed:
            self.alarmed = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0.0
        self.alarmed = False


@dataclass(slots=True)
class ReconcileReport:
    applied: list[Op] = field(default_factory=list)
    failed: list[tuple[Op, str]] = field(default_factory=list)
    deferred: list[IPv4Address] = field(default_factory=list)  # peers waiting for their backoff
    alarms: list[IPv4Address] = field(default_factory=list)
    actual: KernelState = field(default_factory=KernelState)  # as dumped at the start of the round


def _peer_of(op: Op, peers: Collection[IPv4Address]) -> IPv4Address | None:
    match op:
        case AddLink(x) | SetLink(x) | DelLink(x):
            return x.remote
        case AddSa(x) | DelSa(x):
            return x.dst if x.dst in peers else x.src
        case AddPolicy(x) | DelPolicy(x):
            return x.dst if x.direction == Direction.OUT else x.src
        case AddRoute(x) | DelRoute(x):
            # Our routes go through our links, named after the peer: they share its fate.
            name = x.link.removeprefix(LINK_PREFIX)
            if x.link.startswith(LINK_PREFIX) and len(name) == 8:
                try:
                    return IPv4Address(bytes.fromhex(name))
                except ValueError:
                    return None
            return None
    return None


class Reconciler:
    """Desired vs dumped kernel state, applied in the plan's order with per-peer backoff."""

    def __init__(
        self,
        kernel: KernelPort,
        keying: Keying,
        hooks: HookPort,
        owner: Ownership | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.kernel = kernel
        self.keying = keying
        self.hooks = hooks
        self.owner = owner or Ownership()
        self._backoff_template = backoff or Backoff()
        self.backoff: dict[IPv4Address, Backoff] = {}
        self.counters: dict[str, int] = {"applied": 0, "failed": 0, "alarms": 0, "reconciles": 0}
        batch: Callable[[Sequence[Op]], list[Exception | None]] | None = getattr(kernel, "apply_all", None)
        self._batch = batch
        self._ike_last: frozenset[IPv4Address] = frozenset()  # the IKE peers of the last round

    def _phases(self, ops: list[Op]) -> Iterable[list[Op]]:
        """Runs of operations of one kind (the plan's order: deletes first, SAs before policies).

        The operations of one run never depend on each other, so a batching kernel gets a run at
        a time (both directions of a pair go together); without ``apply_all``, one op at a time.
        """
        if self._batch is None:
            yield from ([op] for op in ops)
            return
        run: list[Op] = []
        for op in ops:
            if run and type(op) is not type(run[0]):
                yield run
                run = []
            run.append(op)
        if run:
            yield run

    def _apply_all(self, ops: list[Op]) -> list[Exception | None]:
        if self._batch is not None:
            return self._batch(ops)
        results: list[Exception | None] = []
        for op in ops:
            try:
                self.kernel.apply(op)
            except Exception as exc:  # a netlink error of any kind fails this step, never the run
                results.append(exc)
            else:
                results.append(None)
        return results

    def _failed(
        self,
        op: Op,
        peer: IPv4Address | None,
        exc: Exception,
        *,
        vpn_of: dict[IPv4Address, int],
        failed: set[IPv4Address],
        report: ReconcileReport,
        now: float,
    ) -> None:
        """Report a failed op; its peer's first failure in a round counts for backoff and alarm."""
        self.counters["failed"] += 1
        report.failed.append((op, f"{type(exc).__name__}: {exc}"))
        log.warning("ce_runtime: %s failed: %s", type(op).__name__, exc)
        if peer is None or peer not in vpn_of or peer in failed:
            return
        failed.add(peer)
        if self._state(peer).failed(now):
            self.counters["alarms"] += 1
            report.alarms.append(peer)
            log.error("ce_runtime: ALARM tunnel to %s keeps failing", peer)
            self.hooks.tunnel("alarm", link_name(peer), vpn_of[peer], peer)

    def _state(self, peer: IPv4Address) -> Backoff:
        if peer not in self.backoff:
            t = self._backoff_template
            self.backoff[peer] = Backoff(t.min_interval, t.max_interval, t.alarm_after)
        return self.backoff[peer]

    def reconcile(self, config: RuntimeConfig, now: float) -> ReconcileReport:
        self.counters["reconciles"] += 1
        actual = self.kernel.read()
        report = ReconcileReport(actual=actual)
        desired = desired_state(config, self.keying, actual.sas, self.owner)
        self.keying.flush()  # new epochs are on disk before any SA of theirs is installed
        vpn_of = {peer: vpn.vpn_id for vpn in config.vpns for peer in vpn.peers}
        # An IKE peer's up/down is charon's to tell (ce_runtime.ike.wiring), not its link's.
        ike = frozenset(p for vpn in config.vpns if vpn.ike for p in vpn.peers)
        quiet, self._ike_last = ike | self._ike_last, ike
        ops = plan(desired, actual, self.owner)
        failed_peers: set[IPv4Address] = set()
        touched: set[IPv4Address] = set()
        for phase in self._phases(ops):
            todo: list[tuple[Op, IPv4Address | None]] = []
            for op in phase:
                peer = _peer_of(op, vpn_of)
                if peer is not None and peer in vpn_of:
                    state = self._state(peer)
                    if now < state.next_try:
                        if peer not in report.deferred:
                            report.deferred.append(peer)
                        continue
                    if peer in failed_peers:
                        continue  # one failure stops this peer's remaining steps until its next try
                todo.append((op, peer))
            results = self._apply_all([op for op, _ in todo]) if todo else []
            for (op, peer), error in zip(todo, results, strict=True):
                if error is not None:
                    self._failed(op, peer, error, vpn_of=vpn_of, failed=failed_peers, report=report, now=now)
                    continue
                self.counters["applied"] += 1
                report.applied.append(op)
                if peer is not None:
                    touched.add(peer)
                match op:
                    case AddLink(link) if link.remote in vpn_of and link.remote not in quiet:
                        self.hooks.tunnel("up", link.name, vpn_of[link.remote], link.remote)
                    case DelLink(link) if link.remote not in quiet:
                        self.hooks.tunnel("down", link.name, vpn_of.get(link.remote, -1), link.remote)
                    case _:
                        pass
        for peer in touched - failed_peers:
            if peer in self.backoff:
                self.backoff[peer].succeeded()
        for peer in set(self.backoff) - set(vpn_of):
            del self.backoff[peer]
        return report


def peers_of(vpns: Iterable[VpnConfig]) -> frozenset[IPv4Address]:
    return frozenset(p for v in vpns for p in v.peers)
