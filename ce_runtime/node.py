"""The CE node: the DHCP client's events drive the tunnel runtime (``ce-autoconf client --runtime``).

The reconciler stays sans-IO; this module is the small asyncio glue around it:

- :class:`NodeState` (pure) folds the client's events into "my address and my VPNs' peers":
  ``LeaseBound``/``LeaseRenewed`` give the provider address, ``VpnPeersChanged`` the whole peer
  set of one VPN, ``LeaseLost`` takes the address away. Without an address the desired state is
  empty: tunnels are permanent while the address is ours, but never kept with a stale address
  (their outer header would carry an address that may by now be someone else's).
- :class:`TunnelNode` runs rounds: a change of state wakes it, it waits ``debounce`` seconds so
  that a burst of events (a FORCERENEW brings a renewal and then one event per VPN) makes one
  round, and reconciles; without changes it reconciles every ``interval`` seconds anyway
  (repairs, backoff retries). Netlink work runs on one worker thread, never on the event loop.
- Liveness (:mod:`ce_runtime.liveness`): hellos through every tunnel every ``hello_interval``
  (:class:`HelloSocket`), the inbound SAs' packet counters from each round's dump; "alive",
  "dead", "repair" (a forced round) and "alarm" go to the hooks, the log and the counters.

Stopping leaves the tunnels in place (a restart changes nothing that was right); a lease lost
before stopping (``--release``) is torn down first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Final, Protocol

from ce_runtime.ike.state import RetryPolicy, TunnelEvent
from ce_runtime.ike.wiring import (
    IKE_FIELDS,
    VPN_IKE_FIELDS,
    IkeKeying,
    IkeSettings,
    IkeSettingsError,
    IkeVpnAuth,
    ike_settings,
    restrict,
    tunnel_hook,
    vpn_auth,
)
from ce_runtime.keying import REKEY_PACKETS, EpochFile, Keying, StaticKeying
from ce_runtime.liveness import Health, Liveness
from ce_runtime.runtime import (
    Backoff,
    HookPort,
    KernelPort,
    Reconciler,
    ReconcileReport,
    RuntimeConfig,
    VpnConfig,
    link_name,
)
from dhcp_client.events import ClientEvent, Lease, LeaseBound, LeaseLost, LeaseRenewed, VpnPeersChanged

__all__ = [
    "HELLO_PORT",
    "HelloSocket",
    "NodeError",
    "NodeKernel",
    "NodeSettings",
    "NodeState",
    "TunnelNode",
    "VpnSettings",
    "load_node_settings",
]

log = logging.getLogger("ce_runtime")

#: UDP port of the hellos sent through the tunnels (inner packets only: never seen in provider space).
HELLO_PORT: Final = 3799
HELLO_MAGIC: Final = b"CEH1"
IP_PKTINFO: Final = 8  # <linux/in.h>; not exported by Python 3.11's socket module
_PKTINFO = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


class NodeError(ValueError):
    """An unusable runtime configuration; the message never quotes a secret."""


@dataclass(frozen=True, slots=True)
class VpnSettings:
    """One ``[[vpn]]``: ``secret`` for static keying, ``ike`` (keys or certificates) for IKE keying."""

    vpn_id: int
    secret: bytes = field(repr=False)
    routes: tuple[tuple[IPv4Network, IPv4Address], ...] = ()
    table: int = 254
    vrf: str | None = None  # section 2.2: the VPN's tunnels in this VRF, bound to ``table``
    ike: IkeVpnAuth | None = None  # keying = "ike" (then ``secret`` is empty)

    @property
    def keying(self) -> str:
        return "static" if self.ike is None else "ike"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """``RUNTIME.toml`` (examples/runtime.toml) read into values."""

    state_dir: Path
    vpns: dict[int, VpnSettings]
    underlay_mtu: int = 1500
    hook: str | None = None
    debounce: float = 0.5
    interval: float = 10.0
    hello_interval: float = 2.0
    dead_after: float = 7.0
    hello_port: int = HELLO_PORT
    backoff: Backoff = field(default_factory=Backoff)
    ike: IkeSettings | None = None  # set when a VPN has keying = "ike"
    rekey_packets: int = REKEY_PACKETS  # static keying: next epoch after this many packets on an SA


def _secret_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NodeError(f"{path}: cannot open the VPN secret file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise NodeError(f"{path}: the VPN secret must not be accessible to group or others (chmod 600)")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(raw.decode("ascii", "replace").strip().removeprefix("0x"))
    except ValueError:
        raise NodeError(f"{path}: the VPN secret file does not hold hexadecimal digits") from None
    if len(secret) < 16:
        raise NodeError(f"{path}: the VPN secret is {len(secret)} octets; use at least 16")
    return secret


_KNOWN: Final = {"state_dir", "underlay_mtu", "hook", "timing", "vpn", "ike", "rekey_packets"}
_VPN_FIELDS: Final = {"id", "secret_file", "routes", "table", "vrf"} | VPN_IKE_FIELDS
_TIMING: Final = {
    "debounce",
    "interval",
    "hello_interval",
    "dead_after",
    "hello_port",
    "min_retry",
    "max_retry",
    "alarm_after",
}


def load_node_settings(path: Path) -> NodeSettings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise NodeError(f"{path}: {exc}") from None
    unknown = set(data) - _KNOWN
    timing: dict[str, Any] = dict(data.get("timing", {}))
    unknown |= {f"timing.{k}" for k in set(timing) - _TIMING}
    for v in data.get("vpn", []):
        unknown |= {f"vpn.{k}" for k in set(v) - _VPN_FIELDS}
    unknown |= {f"ike.{k}" for k in set(data.get("ike", {})) - IKE_FIELDS}
    if unknown:
        raise NodeError(f"{path}: unknown settings {sorted(unknown)}")

    def rel(value: object) -> Path:
        p = Path(str(value))
        return p if p.is_absolute() else path.parent / p

    try:
        vpns: dict[int, VpnSettings] = {}
        for v in data.get("vpn", []):
            vpn_id = int(v["id"])
            where = f"[[vpn]] id = {vpn_id}"
            if vpn_id in vpns:
                raise NodeError(f"{where}: listed twice")
            routes = tuple((IPv4Network(r["prefix"]), IPv4Address(r["peer"])) for r in v.get("routes", []))
            vrf = v.get("vrf")
            if vrf is not None and "table" not in v:
                raise NodeError(f"VPN {vpn_id}: vrf = {vrf!r} needs its own table = N")
            table, vrf = int(v.get("table", 254)), None if vrf is None else str(vrf)
            keying = v.get("keying", "static")
            if keying == "static":
                extra = sorted(set(v) & (VPN_IKE_FIELDS - {"keying"}))
                if extra:
                    raise NodeError(f'{where}: {", ".join(extra)} only with keying = "ike"')
                if "secret_file" not in v:
                    raise NodeError(f'{where}: static keying needs secret_file (or keying = "ike")')
                vpns[vpn_id] = VpnSettings(vpn_id, _secret_file(rel(v["secret_file"])), routes, table, vrf)
            elif keying == "ike":
                auth = vpn_auth(v, where, rel)
                vpns[vpn_id] = VpnSettings(vpn_id, b"", routes, table, vrf, ike=auth)
            else:
                raise NodeError(f'{where}.keying: "static" or "ike", not {keying!r}')
        hook = data.get("hook")
        state_dir = rel(data.get("state_dir", "runtime-state"))
        ike = None
        if "ike" in data or any(vs.ike is not None for vs in vpns.values()):
            ike = ike_settings(data.get("ike", {}), "[ike]", rel, state_dir)
        return NodeSettings(
            state_dir=state_dir,
            vpns=vpns,
            underlay_mtu=int(data.get("underlay_mtu", 1500)),
            hook=None if hook is None else str(rel(hook)),
            debounce=float(timing.get("debounce", 0.5)),
            interval=float(timing.get("interval", 10.0)),
            hello_interval=float(timing.get("hello_interval", 2.0)),
            dead_after=float(timing.get("dead_after", 7.0)),
            hello_port=int(timing.get("hello_port", HELLO_PORT)),
            rekey_packets=int(data.get("rekey_packets", REKEY_PACKETS)),
            backoff=Backoff(
                min_interval=float(timing.get("min_retry", 5.0)),
                max_interval=float(timing.get("max_retry", 300.0)),
                alarm_after=int(timing.get("alarm_after", 6)),
            ),
            ike=ike,
        )
    except (NodeError, IkeSettingsError) as exc:
        raise NodeError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise NodeError(f"{path}: {type(exc).__name__}: {exc}") from None


# -- the state the events build -----------------------------------------------------------------


@dataclass(slots=True)
class NodeState:
    """My provider address (None: no lease) and the peers of each VPN, from the client's events."""

    local: IPv4Address | None = None
    peers: dict[int, frozenset[IPv4Address]] = field(default_factory=dict)

    def apply(self, event: ClientEvent) -> bool:
        """Fold one event in; True if the desired tunnels may have changed."""
        match event:
            case LeaseBound(lease) | LeaseRenewed(lease):
                changed = self.local != lease.address
                self.local = lease.address
                return changed
            case LeaseLost():
                changed = self.local is not None
                self.local = None
                return changed
            case VpnPeersChanged(vpn_id=vpn_id, peers=peers, member=member):
                before = self.peers.get(vpn_id)
                if member and peers:
                    self.peers[vpn_id] = peers
                else:
                    self.peers.pop(vpn_id, None)
                return before != self.peers.get(vpn_id)
            case _:
                return False

    def seed(self, lease: Lease | None, peers: Mapping[int, frozenset[IPv4Address]], wall: float) -> None:
        """Start from what the client remembers (its state file), so that a restart desires at once
        what it desired before: nothing torn down while the client re-binds and re-asks."""
        self.local = lease.address if lease is not None and lease.expires_at > wall else None
        self.peers = {vpn_id: p for vpn_id, p in peers.items() if p}

    def config(self, settings: NodeSettings) -> RuntimeConfig | None:
        """The runtime's input, or None when there is no address (then nothing is desired)."""
        if self.local is None:
            return None
        local = self.local
        vpns: list[VpnConfig] = []
        taken: set[IPv4Address] = set()
        for vpn_id, peers in sorted(self.peers.items()):
            vs = settings.vpns.get(vpn_id)
            if vs is None:
                continue  # no secret for it: reported by the node, no tunnels
            mine = frozenset(peers - taken - {local})
            taken |= mine
            provider = mine | {local}
            routes = tuple(
                (prefix, via)
                for prefix, via in vs.routes
                # Section 4: no leaks; in a VRF the spaces are apart and may overlap (section 2.2).
                if via in mine and (vs.vrf is not None or not any(a in prefix for a in provider))
            )
            vpns.append(VpnConfig(vpn_id, mine, routes, vs.table, vs.vrf, ike=vs.ike is not None))
        return RuntimeConfig(local, tuple(vpns), settings.underlay_mtu)


# -- ports --------------------------------------------------------------------------------------


class NodeKernel(KernelPort, Protocol):
    def index(self, name: str) -> int:
        """The interface index of link ``name``; raises if there is none."""
        ...


class HelloPort(Protocol):
    def fileno(self) -> int: ...

    def send(self, local: IPv4Address, peer: IPv4Address, ifindex: int) -> None: ...

    def receive(self) -> list[tuple[IPv4Address, int]]:
        """Hellos waiting: (source, arrival ifindex), draining the socket."""
        ...

    def close(self) -> None: ...


class HelloSocket:
    """UDP hellos sent through a tunnel (``IP_PKTINFO`` names the ipip link as the outgoing interface).

    The payload is ``CEH1`` and the sender's provider address. The caller accepts a hello only
    when it arrived on the ipip link of its sender: the kernel decapsulates only what passed
    ESP and the ``in`` policy, so a forged datagram on the provider network cannot count.
    """

    def __init__(self, port: int = HELLO_PORT) -> None:
        self.port = port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            self._sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            self._sock.bind(("0.0.0.0", port))  # noqa: S104 - the tunnels' inner side, checked per datagram
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, local: IPv4Address, peer: IPv4Address, ifindex: int) -> None:
        info = _PKTINFO.pack(ifindex, local.packed, bytes(4))
        self._sock.sendmsg(
            [HELLO_MAGIC + local.packed], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (str(peer), self.port)
        )

    def receive(self) -> list[tuple[IPv4Address, int]]:
        out: list[tuple[IPv4Address, int]] = []
        while True:
            try:
                data, ancillary, _, addr = self._sock.recvmsg(64, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return out
            source = IPv4Address(addr[0])
            if data != HELLO_MAGIC + source.packed:
                continue
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _PKTINFO.size:
                    out.append((source, _PKTINFO.unpack_from(value)[0]))

    def close(self) -> None:
        self._sock.close()


# -- the node -----------------------------------------------------------------------------------


class JsonHooks:
    """Tunnel events as JSON lines (``emit``), then the operator's hook (``inner``), if any."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], inner: HookPort | None = None) -> None:
        self.emit = emit
        self.inner = inner

    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        self.emit({"event": f"Tunnel{event.capitalize()}", "link": link, "vpn_id": vpn_id, "peer": str(peer)})
        if self.inner is not None:
            self.inner.tunnel(event, link, vpn_id, peer)


@dataclass(slots=True)
class _Round:
    report: ReconcileReport
    indexes: dict[IPv4Address, int]
    inbound: dict[IPv4Address, dict[int, int]]  # per peer: our inbound SAs' packet counters by SPI


class TunnelNode:
    """The asyncio adapter: client events in, reconcile rounds and liveness out."""

    def __init__(
        self,
        settings: NodeSettings,
        kernel_factory: Callable[[], NodeKernel],
        keying: Keying,
        hooks: HookPort,
        *,
        hello: HelloPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[dict[str, Any]], None] | None = None,
        ike: IkeKeying | None = None,
    ) -> None:
        self.settings = settings
        self._ike = ike
        self._ike_peers: frozenset[IPv4Address] = frozenset()  # desired peers of IKE-keyed VPNs
        self._ike_up: set[IPv4Address] = set()  # told "up" (hooks), not yet "down"
        self.state = NodeState()
        self._kernel_factory = kernel_factory
        self._kernel: NodeKernel | None = None
        self._keying = keying
        self._hooks = hooks
        self._hello = hello
        self._clock = clock
        self._emit = emit or (lambda _: None)
        self.reconciler: Reconciler | None = None
        self.liveness = Liveness(settings.dead_after, settings.backoff)
        self.counters: dict[str, int] = {
            "rounds": 0,
            "hellos_sent": 0,
            "hellos_received": 0,
            "hellos_refused": 0,
            "dead_reports": 0,
            "repairs": 0,
            "alarms": 0,
            "ike_failures": 0,
        }
        self.indexes: dict[IPv4Address, int] = {}
        self._vpn_of: dict[IPv4Address, int] = {}
        self._dirty = True
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ce-runtime")
        self._warned: set[int] = set()
        self.last_report: ReconcileReport | None = None

    # events ------------------------------------------------------------------------------------

    def on_event(self, event: ClientEvent) -> None:
        if self.state.apply(event):
            self._dirty = True
            if self._wake is not None:
                self._wake.set()
        vpn_id = event.vpn_id if isinstance(event, VpnPeersChanged) else None
        if vpn_id is not None and vpn_id not in self.settings.vpns and vpn_id not in self._warned:
            self._warned.add(vpn_id)
            log.warning("ce_runtime: VPN %d has no secret_file in the runtime configuration", vpn_id)

    def seed(self, lease: Lease | None, peers: Mapping[int, frozenset[IPv4Address]]) -> None:
        """The client's remembered lease and peers (before its first event); see :meth:`NodeState.seed`."""
        self.state.seed(lease, peers, time.time())
        self._dirty = True

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    # rounds (on the worker thread) ---------------------------------------------------------------

    def _round(self, config: RuntimeConfig | None, now: float) -> _Round:
        if self._kernel is None:
            self._kernel = self._kernel_factory()
            self.reconciler = Reconciler(
                self._kernel, self._keying, self._hooks, backoff=self.settings.backoff
            )
        assert self.reconciler is not None
        keyed = config
        if self._ike is not None:
            self._ike.supervise()
            keyed = self._ike.before(config)  # new connections first: their trap policies exist
        effective = keyed or RuntimeConfig(IPv4Address(0))  # no address: nothing is desired
        report = self.reconciler.reconcile(effective, now)
        if self._ike is not None and self._ike.after(config, report):
            # Connections loaded only now (our address changed): their links in a second pass.
            keyed = self._ike.before(config)
            first = report
            effective = keyed or RuntimeConfig(IPv4Address(0))
            report = self.reconciler.reconcile(effective, now)
            report.applied[:0] = first.applied
            report.failed[:0] = first.failed
        failed = set(self.reconciler.backoff)  # peers with failures pending
        indexes: dict[IPv4Address, int] = {}
        for vpn in effective.vpns:
            for peer in vpn.peers:
                if peer in failed and self.reconciler.backoff[peer].failures:
                    continue
                with contextlib.suppress(Exception):  # no link (yet): no hellos to it
                    indexes[peer] = self._kernel.index(link_name(peer))
        inbound: dict[IPv4Address, dict[int, int]] = {}
        for sa in report.actual.sas:
            if config is not None and sa.dst == config.local and self.reconciler.owner.sa(sa):
                inbound.setdefault(sa.src, {})[sa.spi] = sa.packets
        return _Round(report, indexes, inbound)

    def close(self) -> None:
        def shut() -> None:
            if self._ike is not None:
                stop = self.settings.ike is not None and self.settings.ike.on_exit == "stop"
                config = self.state.config(self.settings)
                if stop and config is not None and self.reconciler is not None:
                    # The IKE peers' links first: once charon is stopped their trap policies are gone.
                    with contextlib.suppress(Exception):
                        self.reconciler.reconcile(restrict(config, ()), self._clock())
                self._ike.close(stop=stop)
            if self._kernel is not None:
                close = getattr(self._kernel, "close", None)
                if close is not None:
                    close()

        self._executor.submit(shut).result()
        self._executor.shutdown()
        if self._hello is not None:
            self._hello.close()

    async def reconcile_now(self) -> ReconcileReport:
        loop = asyncio.get_running_loop()
        config = self.state.config(self.settings)
        self._dirty = False
        self.counters["rounds"] += 1
        done = await loop.run_in_executor(self._executor, self._round, config, self._clock())
        now = self._clock()
        self.last_report = done.report
        self.indexes = done.indexes
        self._vpn_of = {} if config is None else {p: v.vpn_id for v in config.vpns for p in v.peers}
        self._ike_peers = frozenset() if config is None else frozenset(
            p for v in config.vpns if v.ike for p in v.peers
        )  # fmt: skip
        self.liveness.track(self._tracked(), now)
        for peer, packets in done.inbound.items():
            self.liveness.counters(peer, packets, now)
        for op, why in done.report.failed:
            self._emit({"event": "TunnelOpFailed", "op": type(op).__name__, "error": why})
        if done.report.applied:
            self._emit(
                {
                    "event": "Reconciled",
                    "applied": len(done.report.applied),
                    "failed": len(done.report.failed),
                    "tunnels": sorted(str(p) for p in done.indexes),
                }
            )
        return done.report

    # liveness (on the loop) -------------------------------------------------------------------

    def _on_hello(self) -> None:
        assert self._hello is not None
        now = self._clock()
        for source, ifindex in self._hello.receive():
            if self.indexes.get(source) == ifindex:
                self.counters["hellos_received"] += 1
                self.liveness.heard(source, now)
            else:
                self.counters["hellos_refused"] += 1  # not through that peer's tunnel

    def _tracked(self) -> list[IPv4Address]:
        """The tunnels liveness watches: every static one with a link; an IKE one while charon has
        its SAs up (before that, or after a failure, its state is the backend's, with its own
        backoff and alarm; a hello would only trigger an acquire from the responding side)."""
        if self._ike is None:
            return list(self.indexes)
        up = self._ike.up_peers()
        return [p for p in self.indexes if p not in self._ike_peers or p in up]

    def _ike_events(self, events: list[TunnelEvent]) -> None:
        """The backend's events as the runtime's: hooks up/down/alarm, JSON TunnelFailed/TunnelRekeyed."""
        for e in events:
            link, peer = link_name(e.peer), e.peer
            vpn = e.vpn_id if e.vpn_id >= 0 else self._vpn_of.get(peer, -1)
            hook = tunnel_hook(e, self._ike_up)
            record: dict[str, Any] = {}
            if e.kind == "alarm":
                self.counters["alarms"] += 1
                log.error("ce_runtime: ALARM tunnel %s to %s: IKE keeps failing (%s)", link, peer, e.detail)
            elif e.kind == "failed":
                self.counters["ike_failures"] += 1
                record = {"event": "TunnelFailed", "detail": e.detail}
            elif e.kind == "rekeyed" and e.spis is not None:
                record = {"event": "TunnelRekeyed", "spi_in": e.spis[0], "spi_out": e.spis[1]}
            if record:  # through the worker thread like the hooks: the events stay in their order
                record |= {"link": link, "vpn_id": vpn, "peer": str(peer)}
                self._executor.submit(self._emit, record)
            if hook is not None:
                self._executor.submit(self._hooks.tunnel, hook, link, vpn, peer)

    def tick(self, now: float) -> bool:
        """Send hellos and check liveness; True if a repair round was asked for."""
        local = self.state.local
        repair = False
        if self._ike is not None:
            self._ike_events(self._ike.events())
            self.liveness.track(self._tracked(), now)
            repair = self._ike.lost()  # the round restarts charon
        tracked = set(self._tracked())
        if self._hello is not None and local is not None:
            for peer, ifindex in self.indexes.items():
                if peer not in tracked:
                    continue
                try:
                    self._hello.send(local, peer, ifindex)
                    self.counters["hellos_sent"] += 1
                except OSError as exc:
                    log.debug("ce_runtime: hello to %s: %s", peer, exc)
        for t in self.liveness.check(now):
            link, vpn = link_name(t.peer), self._vpn_of.get(t.peer, -1)
            if t.event == "repair":
                if t.peer not in self._ike_peers:  # IKE: charon's DPD and the backend re-key, not us
                    self.counters["repairs"] += 1
                    repair = True
                continue
            if t.event == "dead":
                self.counters["dead_reports"] += 1
                log.warning("ce_runtime: tunnel %s to %s is DEAD (nothing heard for %.0f s)", link, t.peer,
                            self.settings.dead_after)  # fmt: skip
            elif t.event == "alarm":
                self.counters["alarms"] += 1
                log.error("ce_runtime: ALARM tunnel %s to %s stays dead after repairs", link, t.peer)
            else:
                log.info("ce_runtime: tunnel %s to %s is alive", link, t.peer)
            self._executor.submit(self._hooks.tunnel, t.event, link, vpn, t.peer)
        return repair

    def status(self, now: float) -> dict[str, Any]:
        """Counters and per-tunnel health: what ``status.json`` holds."""
        reconciler = self.reconciler.counters if self.reconciler is not None else {}
        tunnels: dict[str, dict[str, Any]] = {
            str(peer): {
                "link": link_name(peer),
                "vpn_id": self._vpn_of.get(peer, -1),
                "keying": "ike" if peer in self._ike_peers else "static",
                "health": h.value,
                "last_heard_ago": ago,
            }
            for peer, (h, ago) in sorted(self.liveness.snapshot(now).items())
        }
        ike_counters: dict[str, int] = {}
        if self._ike is not None:
            # IKE peers without SAs are not watched by liveness; their state is the backend's.
            for peer, st in self._ike.status().items():
                entry = tunnels.setdefault(peer, {
                    "link": link_name(IPv4Address(peer)), "vpn_id": st.get("vpn", -1), "keying": "ike",
                    "health": Health.PENDING.value if st.get("phase") == "connecting" else Health.DEAD.value,
                    "last_heard_ago": None,
                })  # fmt: skip
                entry["keying"] = "ike"
                entry["ike"] = st
            backend = self._ike.backend
            ike_counters = {f"ike_{k}": v for k, v in self._ike.counters.items()}
            if backend is not None:
                ike_counters |= {f"ike_{k}": v for k, v in backend.counters.items()}
        alive = sum(1 for t in tunnels.values() if t["health"] == Health.ALIVE.value)
        return {
            "local": None if self.state.local is None else str(self.state.local),
            "tunnels": dict(sorted(tunnels.items())),
            "counters": {**reconciler, **self.counters, **ike_counters, "tunnels_alive": alive,
                         "tunnels_dead": sum(1 for t in tunnels.values() if t["health"] == "dead")},
        }  # fmt: skip

    # the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._dirty:
            self._wake.set()
        if self._hello is not None:
            loop.add_reader(self._hello.fileno(), self._on_hello)
        next_round = self._clock() + self.settings.interval
        next_tick = self._clock()
        status = ""
        try:
            while not self._stopping:
                timeout = max(0.0, min(next_round, next_tick) - self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                if self._stopping:
                    break
                if self._wake.is_set():
                    self._wake.clear()
                    await asyncio.sleep(self.settings.debounce)  # one round for a burst of events
                    self._wake.clear()
                    next_round = 0.0
                if self._clock() >= next_round:
                    await self.reconcile_now()
                    next_round = self._clock() + self.settings.interval
                now = self._clock()
                if now >= next_tick:
                    if self.tick(now):
                        self._wake.set()
                    next_tick = now + self.settings.hello_interval
                    text = json.dumps(self.status(now), sort_keys=True)
                    if text != status:
                        status = text
                        self._write_status(text)
            if self._dirty:
                await self.reconcile_now()  # e.g. the lease released on the way out: tear down
        finally:
            if self._hello is not None:
                loop.remove_reader(self._hello.fileno())

    def _write_status(self, text: str) -> None:
        from options.durable import replace_file  # noqa: PLC0415

        try:
            replace_file(self.settings.state_dir / "status.json", text.encode() + b"\n")
        except OSError as exc:
            log.warning("ce_runtime: status file: %s", exc)


def build_node(settings: NodeSettings, emit: Callable[[dict[str, Any]], None]) -> TunnelNode:
    """A :class:`TunnelNode` on this namespace's kernel with static keying and the exec hook."""
    from ce_runtime.__main__ import ExecHooks  # noqa: PLC0415
    from ce_runtime.kernel import NetlinkKernel  # noqa: PLC0415 - netlink only when running

    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.state_dir, 0o700)
    keying = StaticKeying(
        {v.vpn_id: v.secret for v in settings.vpns.values() if v.ike is None},
        EpochFile(settings.state_dir / "epochs.json"),
        rekey_packets=settings.rekey_packets,
    )
    lock = threading.Lock()

    def locked_emit(record: dict[str, Any]) -> None:
        with lock:
            emit(record)

    hooks = JsonHooks(locked_emit, ExecHooks(settings.hook))
    return TunnelNode(
        settings,
        NetlinkKernel,
        keying,
        hooks,
        hello=HelloSocket(settings.hello_port),
        emit=locked_emit,
        ike=build_ike(settings),
    )


def build_ike(settings: NodeSettings) -> IkeKeying | None:
    """IKE keying for the VPNs that ask for it: our own charon in ``[ike] run_dir``, or attached."""
    auths = {v.vpn_id: v.ike for v in settings.vpns.values() if v.ike is not None}
    if not auths or settings.ike is None:
        return None
    from ce_runtime.ike.charon import Charon, CharonSettings  # noqa: PLC0415
    from ce_runtime.ike.vici_backend import ViciClient, XfrmRepair  # noqa: PLC0415

    ike = settings.ike
    certificates = any(a.cert is not None for a in auths.values())
    charon = None if ike.attach else Charon(ike.run_dir, CharonSettings(certificates=certificates))
    b = settings.backoff
    return IkeKeying(
        ike,
        auths,
        RetryPolicy(min_interval=b.min_interval, max_interval=b.max_interval, alarm_after=b.alarm_after),
        charon=charon,
        connect=ViciClient,
        kernel=XfrmRepair(),
    )
