"""IKE keying inside the tunnel runtime: settings, charon supervision, and the order of changes.

The runtime (:mod:`ce_runtime.node`, ``python -m ce_runtime``) keeps building every peer's ipip
link and routes; for a VPN with ``keying = "ike"`` charon installs the SAs and policies
(:mod:`ce_runtime.ike.vici_backend`), so ``desired_state`` gives those peers no SA and no policy.
:class:`IkeKeying` wraps each reconcile round so that no ipip packet to an IKE peer can leave
unprotected:

- **before** the round, new peers' connections are loaded (``start_action = trap`` puts the
  kernel's ``out`` policy in place at once) and only peers whose connection is loaded get a link;
- **after** the round, connections of peers that left are unloaded, but only once their link is
  gone (an ipip link without the trap policy would send in the clear).

It also starts our own charon (or attaches to a running one), restarts it when it dies (stale SAs
flushed, every connection reloaded), and turns the backend's events into the runtime's.
All of it runs on the runtime's worker thread; nothing here touches the event loop.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, Protocol

from ce_runtime.ike.config import CertAuth, IkePeer, IkeTimers, PskAuth
from ce_runtime.ike.revocation import CrlError, CrlWatch, parse_crl, read_files
from ce_runtime.ike.state import Phase, RetryPolicy, TunnelEvent
from ce_runtime.ike.vici_backend import IkeBackend, KernelRepair, Vici
from ce_runtime.model import DelLink, Ownership
from ce_runtime.runtime import ReconcileReport, RuntimeConfig, VpnConfig

__all__ = [
    "IKE_FIELDS",
    "VPN_IKE_FIELDS",
    "CharonPort",
    "IkeKeying",
    "IkeSettings",
    "IkeSettingsError",
    "IkeVpnAuth",
    "ike_settings",
    "read_private_file",
    "restrict",
    "tunnel_hook",
    "vpn_auth",
]

log = logging.getLogger("ce_runtime.ike")

#: Keys of a ``[[vpn]]`` entry that belong to IKE keying.
VPN_IKE_FIELDS: Final = frozenset(
    {"keying", "psk_file", "pairs", "cert_file", "key_file", "ca_file", "key_type", "crl_file"}
)
#: Keys of the ``[ike]`` section.
IKE_FIELDS: Final = frozenset(
    {"charon", "socket", "run_dir", "on_exit", "dpd_delay", "child_rekey", "child_life", "ike_rekey",
     "establish_timeout"}
)  # fmt: skip
KEY_TYPES: Final = ("ecdsa", "rsa", "ed25519", "any")


class IkeSettingsError(ValueError):
    """A bad IKE setting; the message names the field (and the file, for key files), never a key."""


def read_private_file(path: Path, what: str) -> bytes:
    """A key file: refused unless only its owner may read it (0600 or stricter)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise IkeSettingsError(f"{what} {path}: {exc.strerror}") from None
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            raise IkeSettingsError(f"{what} {path}: must not be accessible to group or others (chmod 600)")
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
            if len(data) > 1 << 20:
                raise IkeSettingsError(f"{what} {path}: larger than 1 MiB")
    finally:
        os.close(fd)
    return data


def _public_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IkeSettingsError(f"{what} {path}: {exc.strerror}") from None


def _psk(path: Path, what: str) -> PskAuth:
    """A PSK file holds the key itself (e.g. 64 hex digits); surrounding whitespace is ignored."""
    key = read_private_file(path, what).strip()
    if len(key) < 16:
        raise IkeSettingsError(f"{what} {path}: {len(key)} octets; a pre-shared key needs at least 16")
    return PskAuth(key)


@dataclass(frozen=True, slots=True)
class IkeVpnAuth:
    """How this CE authenticates the peers of one IKE-keyed VPN.

    The VPN's default is either a pre-shared key (``psk``) or certificates (``cert``: ours and the
    CA the peers' must chain to; ``key``: our private key, DER); ``pairs`` overrides it per peer
    with a pre-shared key of that pair (e.g. a peer that has no certificate).
    """

    psk: PskAuth | None = None
    pairs: Mapping[IPv4Address, PskAuth] = field(default_factory=dict)
    cert: CertAuth | None = None
    key: tuple[str, bytes] | None = field(default=None, repr=False)
    crl_file: Path | None = None  # certificate mode: revoked peers (ce_runtime.ike.revocation)

    def auth_for(self, peer: IPv4Address) -> PskAuth | CertAuth | None:
        """None: no key for this peer (a VPN with per-pair keys only): it gets no tunnel."""
        return self.pairs.get(peer) or self.cert or self.psk


def vpn_auth(entry: Mapping[str, Any], where: str, rel: Callable[[object], Path]) -> IkeVpnAuth:
    """The IKE fields of one VPN entry (TOML table or JSON object); ``where`` names it in errors."""
    psk_file = entry.get("psk_file")
    pairs = entry.get("pairs", [])
    cert_fields = [k for k in ("cert_file", "key_file", "ca_file") if k in entry]
    if "secret_file" in entry:
        raise IkeSettingsError(f"{where}: secret_file is for static keying (IKE: psk_file or certificates)")
    if cert_fields:
        missing = sorted({"cert_file", "key_file", "ca_file"} - set(cert_fields))
        if missing:
            raise IkeSettingsError(f"{where}: certificate mode needs {', '.join(missing)} too")
        if psk_file is not None:
            raise IkeSettingsError(f"{where}: psk_file or certificates (pairs may override either)")
        key_type = str(entry.get("key_type", "ecdsa"))
        if key_type not in KEY_TYPES:
            raise IkeSettingsError(f"{where}.key_type: {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    elif "key_type" in entry or "crl_file" in entry:
        which = "key_type" if "key_type" in entry else "crl_file"
        raise IkeSettingsError(f"{where}.{which}: only with certificates (cert_file, key_file, ca_file)")
    if not isinstance(pairs, list):
        raise IkeSettingsError(f"{where}.pairs: a list of {{ peer = ADDRESS, psk_file = PATH }}")
    by_peer: dict[IPv4Address, PskAuth] = {}
    for n, pair in enumerate(pairs):
        here = f"{where}.pairs[{n}]"
        if not isinstance(pair, Mapping) or set(pair) != {"peer", "psk_file"}:
            raise IkeSettingsError(f"{here}: needs exactly peer and psk_file")
        try:
            peer = IPv4Address(str(pair["peer"]))
        except ValueError as exc:
            raise IkeSettingsError(f"{here}.peer: {exc}") from None
        if peer in by_peer:
            raise IkeSettingsError(f"{here}.peer: {peer} listed twice")
        by_peer[peer] = _psk(rel(pair["psk_file"]), f"{here}.psk_file")
    if psk_file is None and not by_peer and not cert_fields:
        raise IkeSettingsError(f'{where}: keying = "ike" needs psk_file, pairs or certificate files')
    if cert_fields:
        cert = CertAuth(
            _public_file(rel(entry["cert_file"]), f"{where}.cert_file"),
            _public_file(rel(entry["ca_file"]), f"{where}.ca_file"),
        )
        key = read_private_file(rel(entry["key_file"]), f"{where}.key_file")
        crl_file = None
        if "crl_file" in entry:
            crl_file = rel(entry["crl_file"])
            try:  # read again at every round; checked here so that a typo stops the start
                parse_crl(_public_file(crl_file, f"{where}.crl_file"), f"{where}.crl_file {crl_file}")
            except CrlError as exc:
                raise IkeSettingsError(str(exc)) from None
        return IkeVpnAuth(pairs=by_peer, cert=cert, key=(key_type, key), crl_file=crl_file)
    psk = None if psk_file is None else _psk(rel(psk_file), f"{where}.psk_file")
    return IkeVpnAuth(psk=psk, pairs=by_peer)


@dataclass(frozen=True, slots=True)
class IkeSettings:
    """The ``[ike]`` section: whose charon, where its files live, timers."""

    run_dir: Path
    attach: Path | None = None  # a running charon's VICI socket instead of our own instance
    on_exit: str = "keep"  # "keep": charon and the tunnels outlive us (adopted at restart); "stop"
    timers: IkeTimers = field(default_factory=IkeTimers)
    establish_timeout: float = 30.0


def ike_settings(
    raw: Mapping[str, Any], where: str, rel: Callable[[object], Path], state_dir: Path
) -> IkeSettings:
    unknown = sorted(set(raw) - IKE_FIELDS)
    if unknown:
        raise IkeSettingsError(f"{where}: unknown settings {unknown}")
    mode = str(raw.get("charon", "own"))
    if mode not in ("own", "attach"):
        raise IkeSettingsError(f'{where}.charon: "own" or "attach", not {mode!r}')
    if mode == "attach" and "socket" not in raw:
        raise IkeSettingsError(f'{where}: charon = "attach" needs socket (the running charon\'s VICI)')
    if mode == "own" and "socket" in raw:
        raise IkeSettingsError(f'{where}.socket: only with charon = "attach"')
    on_exit = str(raw.get("on_exit", "keep"))
    if on_exit not in ("keep", "stop"):
        raise IkeSettingsError(f'{where}.on_exit: "keep" or "stop", not {on_exit!r}')
    defaults = IkeTimers()
    try:
        timers = IkeTimers(
            ike_rekey=int(raw.get("ike_rekey", defaults.ike_rekey)),
            child_rekey=int(raw.get("child_rekey", defaults.child_rekey)),
            child_life=int(raw.get("child_life", defaults.child_life)),
            dpd_delay=int(raw.get("dpd_delay", defaults.dpd_delay)),
        )
        establish = float(raw.get("establish_timeout", 30.0))
    except (TypeError, ValueError) as exc:
        raise IkeSettingsError(f"{where}: {exc}") from None
    return IkeSettings(
        run_dir=rel(raw["run_dir"]) if "run_dir" in raw else state_dir / "ike",
        attach=rel(raw["socket"]) if mode == "attach" else None,
        on_exit=on_exit,
        timers=timers,
        establish_timeout=establish,
    )


class CharonPort(Protocol):
    """What :class:`IkeKeying` needs of :class:`ce_runtime.ike.charon.Charon`."""

    @property
    def socket_path(self) -> Path: ...
    def adopt(self) -> bool: ...
    def start(self, timeout: float = 30.0) -> float: ...
    def running(self) -> bool: ...
    def kill(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...


class IkeKeying:
    """The IKE-keyed peers of one runtime: one backend, one charon (ours or attached)."""

    def __init__(
        self,
        settings: IkeSettings,
        auths: Mapping[int, IkeVpnAuth],
        policy: RetryPolicy,
        *,
        charon: CharonPort | None,
        connect: Callable[[Path], Vici],
        kernel: KernelRepair | None = None,
        owner: Ownership | None = None,
        backend_options: Mapping[str, Any] | None = None,
        threads: bool = True,
    ) -> None:
        if charon is None and settings.attach is None:
            raise ValueError("our own charon, or a socket to attach to")
        self.settings = settings
        self.auths = dict(auths)
        self.policy = replace(policy, establish_timeout=settings.establish_timeout)
        self.charon = charon
        self.connect = connect
        self.kernel = kernel
        self.owner = owner or Ownership()
        self.backend_options = dict(backend_options or {})
        self.threads = threads  # False: tests drive the backend's rounds themselves
        self.backend: IkeBackend | None = None
        self.counters: dict[str, int] = {"charon_starts": 0, "charon_restarts": 0, "charon_adopted": 0}
        self._pending: list[TunnelEvent] = []  # synthesised (a lost charon's tunnels went down)
        self._pending_lock = threading.Lock()  # written on the worker thread, drained by the loop
        self._warned: set[IPv4Address] = set()
        self._crls = CrlWatch(tuple(sorted({a.crl_file for a in self.auths.values() if a.crl_file})))
        self._crl_errors: tuple[str, ...] = ()

    # -- what the runtime asks -------------------------------------------------------------------

    def peers_for(self, config: RuntimeConfig | None) -> dict[IPv4Address, IkePeer]:
        """The desired IKE peers of ``config`` (a peer without a key gets no tunnel, logged once)."""
        out: dict[IPv4Address, IkePeer] = {}
        for vpn in () if config is None else config.vpns:
            auth = self.auths.get(vpn.vpn_id)
            if not vpn.ike or auth is None:
                continue
            for peer in vpn.peers:
                how = auth.auth_for(peer)
                if how is None:
                    if peer not in self._warned:
                        self._warned.add(peer)
                        log.warning("ike: VPN %d: no pre-shared key for peer %s: no tunnel", vpn.vpn_id, peer)
                    continue
                out[peer] = IkePeer(peer, vpn.vpn_id, how)
        return out

    def before(self, config: RuntimeConfig | None) -> RuntimeConfig | None:
        """Load new peers' connections; the config to reconcile: IKE peers only once loaded."""
        if config is None:
            return None
        desired = self.peers_for(config)
        if desired and self.backend is None:
            try:
                self._start(config.local)
            except Exception as exc:  # no charon, no IKE tunnels (never unprotected ones); retried
                self.counters["charon_failures"] = self.counters.get("charon_failures", 0) + 1
                log.error("ike: cannot start or reach charon: %s", exc)
        if self.backend is not None:
            self._refresh_crls(self.backend)
        usable: set[IPv4Address] = set()
        if self.backend is not None and self.backend.local == config.local:
            # Peers that left (and connections an earlier instance left) go after their links.
            failed = set(self.backend.set_peers(config.local, desired.values(), remove=False))
            usable = set(self.backend.loaded()) & set(desired) - failed
        return restrict(config, usable)

    def after(self, config: RuntimeConfig | None, report: ReconcileReport) -> bool:
        """Unload peers that left once their links are gone; True if another round should follow
        (connections loaded only now, after a change of our address, still need their links)."""
        backend = self.backend
        if backend is None:
            return False
        desired = self.peers_for(config)
        deleted = {op.link.remote for op in report.applied if isinstance(op, DelLink)}
        linked = {x.remote for x in report.actual.links if self.owner.link(x)} - deleted
        local = backend.local if config is None else config.local
        keep = {} if local != backend.local else {a: p for a, p in backend.loaded().items() if a in linked}
        had = set(backend.loaded()) if local == backend.local else set()
        failed = backend.set_peers(local, [*keep.values(), *desired.values()])
        return bool(set(backend.loaded()) - had - set(failed))

    def lost(self) -> bool:
        """charon died (our own) or its socket went away (attached); cheap, for every tick."""
        backend = self.backend
        if backend is None:
            return False
        return backend.charon_lost.is_set() or (self.charon is not None and not self.charon.running())

    def supervise(self) -> bool:
        """Before a round: if charon was lost, drop the backend (the round then starts a fresh
        charon, flushes its predecessor's SAs and reloads every connection). True if it was."""
        if not self.lost():
            return False
        log.error("ike: charon is gone: restarting it, flushing its leftovers, reloading every connection")
        self.counters["charon_restarts"] += 1
        self._drop_backend()
        return True

    def events(self) -> list[TunnelEvent]:
        with self._pending_lock:
            out, self._pending = self._pending, []
        backend = self.backend
        if backend is not None:
            out += backend.drain_events()
        return out

    def up_peers(self) -> set[IPv4Address]:
        return set() if self.backend is None else self.backend.up_peers()

    def status(self) -> dict[str, dict[str, object]]:
        return {} if self.backend is None else self.backend.status()

    def close(self, *, stop: bool) -> None:
        """``stop``: unload every connection and stop our charon (the caller deleted the links first);
        else charon keeps the tunnels and the next start adopts it."""
        if self.backend is not None:
            self.backend.stop(unload=stop)
            self.backend.client.close()
            self.backend = None
        if stop and self.charon is not None:
            self.charon.stop()

    # -- charon and the backend ------------------------------------------------------------------

    def _start(self, local: IPv4Address) -> None:
        fresh = False
        if self.settings.attach is not None:
            socket_path = self.settings.attach
        else:
            assert self.charon is not None
            if self.charon.adopt():
                self.counters["charon_adopted"] += 1
                log.info("ike: adopted the charon left running in %s", self.settings.run_dir)
            else:
                took = self.charon.start()
                fresh = True
                self.counters["charon_starts"] += 1
                log.info("ike: charon started in %.2f s", took)
            socket_path = self.charon.socket_path
        backend = IkeBackend(
            self.connect(socket_path), local, timers=self.settings.timers, policy=self.policy,
            kernel=self.kernel, **self.backend_options,
        )  # fmt: skip
        for key_type, der in {auth.key for auth in self.auths.values() if auth.key is not None}:
            backend.load_credentials(key_type, der)
        self._crls.reset()
        self._refresh_crls(backend)  # before any connection: no peer authenticated without them
        # A charon we just started holds no SA: whatever the kernel has in our reqid range is a
        # killed instance's and goes, right before the connections are loaded again.
        backend.start(flush_stale=fresh, threads=self.threads)
        self.backend = backend

    def _refresh_crls(self, backend: IkeBackend) -> None:
        """Load changed CRL files; if one revokes more than before, re-authenticate the
        certificate peers (charon checks revocation only when a peer authenticates)."""
        if not self._crls.paths:
            return
        update = self._crls.check(read_files(self._crls.paths))
        if update.errors != self._crl_errors:  # logged when they change, not every round
            for error in update.errors:
                log.error("ike: %s (the CRL loaded before stays in force)", error)
            self._crl_errors = update.errors
        for der in update.load:
            backend.load_crl(der)
            self.counters["crl_loads"] = self.counters.get("crl_loads", 0) + 1
        if update.reauthenticate:
            peers = backend.reauthenticate_certificates()
            self.counters["crl_reauthentications"] = self.counters.get("crl_reauthentications", 0) + 1
            log.warning("ike: a CRL revokes more certificates: re-authenticating %d peers", len(peers))

    def _drop_backend(self) -> None:
        backend, self.backend = self.backend, None
        if backend is None:
            return
        now = backend.clock()
        lost: list[TunnelEvent] = []
        for address, status in backend.status().items():
            if status.get("phase") == Phase.UP.value:
                vpn = status.get("vpn")
                lost.append(
                    TunnelEvent("down", IPv4Address(address), vpn if isinstance(vpn, int) else -1, now,
                                "charon lost")
                )  # fmt: skip
        with self._pending_lock:
            self._pending += backend.drain_events() + lost
        backend.stop()
        backend.client.close()
        if self.charon is not None:
            self.charon.kill()


def tunnel_hook(event: TunnelEvent, up: set[IPv4Address]) -> str | None:
    """The runtime's hook for a backend event ("up", "down", "alarm"; None: JSON/log only).

    ``up`` (updated here) holds the peers told "up": "down" and "removed" only follow an "up", so
    hooks see strictly alternating up/down per tunnel whatever the keying.
    """
    if event.kind == "up":
        up.add(event.peer)
        return "up"
    if event.kind in ("down", "removed") and event.peer in up:
        up.discard(event.peer)
        return "down"
    if event.kind == "alarm":
        return "alarm"
    return None


def restrict(config: RuntimeConfig, usable: Iterable[IPv4Address]) -> RuntimeConfig:
    """``config`` with the IKE VPNs' peers cut to ``usable`` (and their routes with them)."""
    keep = set(usable)
    vpns: list[VpnConfig] = []
    for vpn in config.vpns:
        if not vpn.ike:
            vpns.append(vpn)
            continue
        peers = vpn.peers & keep
        routes = tuple((prefix, via) for prefix, via in vpn.routes if via in peers)
        vpns.append(replace(vpn, peers=frozenset(peers), routes=routes))
    return replace(config, vpns=tuple(vpns))
