"""IKEv2 keying through charon over VICI: desired peers in, connections loaded/unloaded, tunnel events out.

The interface the runtime uses (:mod:`ce_runtime.ike.wiring` does it; docs/runtime.md)::

    backend = IkeBackend(ViciClient(socket_path), local, kernel=XfrmRepair())
    backend.start(flush_stale=True)        # our own, freshly started charon: flush its leftovers
    backend.set_peers(local, peers)        # any time: loads new/changed, unloads removed peers
    for event in backend.drain_events():   # TunnelEvent: up / rekeyed / down / failed / alarm / removed
        ...
    backend.status()                       # per peer: phase, failures, alarmed, SPIs (no keys)
    backend.stop()

charon installs the SAs and the policies itself (reqid in the IKE range, :mod:`ce_runtime.ike.config`);
the runtime keeps managing the ipip links and routes only. Two threads: one listens to charon's
events (``ike-updown``, ``child-updown``, ``ike-rekey``, ``child-rekey``) on its own VICI session and
marks the connections they name; a worker lists the SAs (one ``list-sas`` per round), feeds each
peer's :class:`~ce_runtime.ike.state.PeerTracker`, removes duplicates (designated initiator only),
and starts initiations, each on its own VICI session in a small thread pool, so that one peer that
does not answer never delays the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol

import vici  # strongSwan's own binding (PyPI "vici")

from ce_runtime.ike.config import (
    CHILD,
    IKE_REQID_BASE,
    CertAuth,
    IkePeer,
    IkeTimers,
    PskAuth,
    conn_name,
    connection,
    is_initiator,
    owned_reqid,
    peer_of_conn,
    shared_secret,
    shared_secret_id,
)
from ce_runtime.ike.state import (
    ConnView,
    PeerTracker,
    RetryPolicy,
    TunnelEvent,
    classify_failure,
    conn_view,
    duplicates,
)
from ce_runtime.xfrm import Direction, XfrmSocket

__all__ = ["EVENTS", "IkeBackend", "KernelRepair", "Vici", "ViciClient", "XfrmRepair"]

log = logging.getLogger("ce_runtime.ike")

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")
ROUND_PAUSE_FACTOR = 2.0  # after a round, pause twice as long as it took ...
ROUND_PAUSE_MAX = 5.0  # ... but never longer than this (seconds)


@dataclass(frozen=True, slots=True)
class InitiateResult:
    ok: bool
    lines: tuple[str, ...]
    errmsg: str


class Vici(Protocol):
    """The VICI calls the backend makes (a fake implements it in the unit tests)."""

    def load_conn(self, message: Mapping[str, object]) -> None: ...
    def unload_conn(self, name: str) -> None: ...
    def load_shared(self, message: Mapping[str, object]) -> None: ...
    def unload_shared(self, ident: str) -> None: ...
    def load_key(self, key_type: str, der: bytes) -> None: ...
    def load_cert(self, message: Mapping[str, object]) -> None: ...
    def flush_certs(self, kind: str) -> None: ...
    def list_sas(self) -> list[Mapping[str, object]]: ...
    def list_conns(self) -> list[str]: ...
    def initiate(self, name: str, timeout_ms: int) -> InitiateResult: ...
    def terminate(self, selector: Mapping[str, object]) -> None: ...
    def rekey(self, name: str) -> None: ...
    def listen(self, stop: threading.Event, handle: Callable[[str, Mapping[str, object]], None]) -> None: ...
    def close(self) -> None: ...


class ViciClient:
    """:class:`Vici` on strongSwan's ``vici`` package: one control session, fresh ones where needed.

    ``vici.Session`` is not thread-safe: the control session is used under a lock; initiations
    and the event listener each open their own session on the same socket.
    """

    def __init__(self, socket_path: str | Path, connect_timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._control = self._session()

    def _session(self) -> Any:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(self.socket_path)
            except BlockingIOError:
                # EAGAIN: charon's accept backlog is full (a busy charon, many sessions opening at
                # once; seen with 50 peers under TCG). With a timeout set, connect does not wait
                # for room: retry until the deadline.
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
                continue
            except BaseException:
                sock.close()
                raise
            sock.settimeout(None)
            return vici.Session(sock)

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._control.transport.close()

    def load_conn(self, message: Mapping[str, object]) -> None:
        with self._lock:
            self._control.load_conn(dict(message))

    def unload_conn(self, name: str) -> None:
        with self._lock:
            self._control.unload_conn({"name": name})

    def load_shared(self, message: Mapping[str, object]) -> None:
        with self._lock:
            self._control.load_shared(dict(message))

    def unload_shared(self, ident: str) -> None:
        with self._lock:
            self._control.unload_shared({"id": ident})

    def load_key(self, key_type: str, der: bytes) -> None:
        with self._lock:
            self._control.load_key({"type": key_type, "data": der})

    def load_cert(self, message: Mapping[str, object]) -> None:
        with self._lock:
            self._control.load_cert(dict(message))

    def flush_certs(self, kind: str) -> None:
        with self._lock:
            self._control.flush_certs({"type": kind})

    def list_sas(self) -> list[Mapping[str, object]]:
        with self._lock:
            return list(self._control.list_sas())

    def list_conns(self) -> list[str]:
        with self._lock:
            return [str(name) for entry in self._control.list_conns() for name in entry]

    def initiate(self, name: str, timeout_ms: int) -> InitiateResult:
        session = self._session()
        lines: list[str] = []
        try:
            message = {"ike": name, "child": CHILD, "timeout": str(timeout_ms), "init-limits": "no"}
            for entry in session.initiate(message):
                raw = entry.get("msg", b"")
                lines.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
            return InitiateResult(True, tuple(lines), "")
        except vici.exception.CommandException as exc:
            return InitiateResult(False, tuple(lines), str(exc))
        finally:
            with contextlib.suppress(OSError):
                session.transport.close()

    def terminate(self, selector: Mapping[str, object]) -> None:
        session = self._session()
        try:
            for _ in session.terminate(dict(selector)):
                pass
        finally:
            with contextlib.suppress(OSError):
                session.transport.close()

    def rekey(self, name: str) -> None:
        with self._lock:
            self._control.rekey({"child": CHILD, "ike": name})

    def listen(self, stop: threading.Event, handle: Callable[[str, Mapping[str, object]], None]) -> None:
        """Deliver events until ``stop`` is set; returns (raises OSError) if charon goes away."""
        session = self._session()
        try:
            for label, message in session.listen(list(EVENTS), timeout=0.5):
                if stop.is_set():
                    break
                if label is None:
                    continue
                handle(label.decode() if isinstance(label, bytes) else str(label), message)
        finally:
            with contextlib.suppress(OSError):
                session.transport.close()


class KernelRepair(Protocol):
    def flush(self, reqids: Callable[[int], bool]) -> int:
        """Delete SAs and policies whose reqid matches; the number deleted."""
        ...

    def reqids(self, local: IPv4Address, owned: Callable[[int], bool]) -> dict[IPv4Address, int]:
        """Per peer, the reqid of the outbound ``local`` -> peer policy charon installed (if owned)."""
        ...


class XfrmRepair:
    """:class:`KernelRepair` on ce_runtime's own XFRM netlink codec (this namespace)."""

    def flush(self, reqids: Callable[[int], bool]) -> int:
        deleted = 0
        with XfrmSocket() as xfrm:
            for policy in xfrm.dump_policies():
                if reqids(policy.reqid):
                    with contextlib.suppress(OSError):
                        xfrm.delete_policy(policy)
                        deleted += 1
            for sa in xfrm.dump_sas():
                if reqids(sa.reqid):
                    with contextlib.suppress(OSError):
                        xfrm.delete_sa(sa)
                        deleted += 1
        return deleted

    def reqids(self, local: IPv4Address, owned: Callable[[int], bool]) -> dict[IPv4Address, int]:
        with XfrmSocket() as xfrm:
            return {
                p.dst: p.reqid
                for p in xfrm.dump_policies()
                if p.direction == Direction.OUT and p.src == local and p.src_prefix == 32 and owned(p.reqid)
            }


@dataclass(slots=True)
class _Loaded:
    peer: IkePeer
    reqid: int
    message: dict[str, object]
    tracker: PeerTracker


class IkeBackend:
    """Keeps charon's connections equal to the desired peers and reports each tunnel's state."""

    def __init__(
        self,
        client: Vici,
        local: IPv4Address,
        *,
        timers: IkeTimers | None = None,
        policy: RetryPolicy | None = None,
        kernel: KernelRepair | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[TunnelEvent], None] | None = None,
        initiate_timeout: float = 15.0,
        workers: int = 8,
        poll_interval: float = 2.0,
    ) -> None:
        self.client = client
        self.local = local
        self.timers = timers or IkeTimers()
        self.policy = policy or RetryPolicy()
        self.kernel = kernel
        self.clock = clock
        self.on_event = on_event
        self.initiate_timeout = initiate_timeout
        self.poll_interval = poll_interval
        self._loaded: dict[IPv4Address, _Loaded] = {}
        self._orphans: set[IPv4Address] = set()  # ours in an attached charon, not (yet) desired
        # An adopted connection's reqid, from charon's policies in the kernel: it is loaded again
        # under the same one (its CHILD_SA and policies carry it), and no other peer takes it.
        self._kept_reqids: dict[IPv4Address, int] = {}
        self._events: list[TunnelEvent] = []
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._dirty = True
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ike-initiate")
        self._threads: list[threading.Thread] = []
        self.charon_lost = threading.Event()
        self.counters: dict[str, int] = {"initiations": 0, "duplicates_terminated": 0, "flushed": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, *, flush_stale: bool = False, threads: bool = True) -> None:
        """Start the event listener and the worker (``threads=False``: the caller drives :meth:`round`).

        ``flush_stale``: charon was just (re)started by us, so no SA or policy in our reqid range can
        be live: whatever the kernel still holds there (a killed instance's) is deleted first.
        Attached to a running charon (``False``), connections of ours it already has are adopted.
        """
        if flush_stale and self.kernel is not None:
            self.counters["flushed"] += self.kernel.flush(owned_reqid)
        if not flush_stale:
            self._adopt()
        if not threads:
            return
        for name, target in (("ike-events", self._listen), ("ike-worker", self._work)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, unload: bool = False) -> None:
        """Stop the threads; ``unload`` also terminates and unloads every connection we loaded."""
        if unload:
            self.set_peers(self.local, [])
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _adopt(self) -> None:
        """Connections named like ours in an already running charon: unloaded unless desired again,
        and if desired, loaded under the reqid they have (a new one would make charon replace the
        policies under the live CHILD_SA)."""
        for name in self.client.list_conns():
            peer = peer_of_conn(name)
            if peer is not None and peer not in self._loaded:
                log.info("ike: found connection %s loaded by an earlier instance", name)
                self._orphans.add(peer)
        if self._orphans and self.kernel is not None:
            found = self.kernel.reqids(self.local, owned_reqid)
            self._kept_reqids = {peer: found[peer] for peer in self._orphans if peer in found}

    # -- desired peers in ------------------------------------------------------------------------

    def load_credentials(self, key_type: str, key_der: bytes) -> None:
        """Certificate mode: this CE's private key (DER; ``key_type`` "ecdsa" or "rsa"), held by charon."""
        self.client.load_key(key_type, key_der)

    def load_crl(self, der: bytes) -> None:
        """A CRL (DER) for charon's revocation checks; a newer one of the same CA supersedes it.

        The credential manager keeps the CRLs it has used in a cache that it consults first, so
        the superseded one would still answer (seen in the VM: "using cached crl ... status is
        good" after the new CRL had replaced it in the VICI set): the CRL cache is flushed.
        """
        self.client.load_cert({"type": "x509crl", "flag": "none", "data": der})
        self.client.flush_certs("x509crl")

    def reauthenticate_certificates(self) -> list[IPv4Address]:
        """Terminate the IKE_SAs of certificate-authenticated peers: their re-establishment (the
        designated initiator's retry, or traffic hitting the trap) checks the peer's certificate
        against the CRLs charon holds now. The peers affected."""
        with self._lock:
            peers = sorted(a for a, x in self._loaded.items() if isinstance(x.peer.auth, CertAuth))
        for address in peers:
            with contextlib.suppress(Exception):  # nothing established: nothing to terminate
                self.client.terminate({"ike": conn_name(address), "timeout": "3000", "force": "yes"})
        return peers

    def _reqid(self, address: IPv4Address) -> int:
        """The adopted connection's own reqid, else the lowest one nobody has or keeps."""
        used = {x.reqid for x in self._loaded.values()}
        kept = self._kept_reqids.get(address)
        if kept is not None and kept not in used:
            return kept
        taken = used | {r for a, r in self._kept_reqids.items() if a != address}
        n = 1
        while IKE_REQID_BASE + n in taken:
            n += 1
        return IKE_REQID_BASE + n

    def set_peers(
        self, local: IPv4Address, peers: Iterable[IkePeer], *, remove: bool = True
    ) -> list[IPv4Address]:
        """Make charon's connections those of ``peers``; returns the peers whose loading failed.

        ``remove=False`` only adds and changes (same ``local``): the runtime unloads a peer only
        after its ipip link is gone (:mod:`ce_runtime.ike.wiring`).
        """
        desired = {p.address: p for p in peers}
        if local in desired:
            raise ValueError("this CE is listed as its own peer")
        failed: list[IPv4Address] = []
        with self._lock:
            if local != self.local:
                if not remove:
                    raise ValueError("a new local address removes every connection: remove=True")
                for address in list(self._loaded):
                    self._remove(address, "local address changed")
                self.local = local
            if remove:
                gone = sorted(set(self._loaded) - set(desired)) + sorted(self._orphans - set(desired))
                for address in gone:
                    self._remove(address, "no longer a peer")
                adopted, self._orphans = self._orphans, set()
            else:
                adopted = set(self._orphans)
                self._orphans -= set(desired)
            for address, peer in sorted(desired.items()):
                try:
                    new = self._load(peer)
                except Exception as exc:  # a refused message fails this peer, never the others
                    log.warning("ike: loading %s failed: %s", conn_name(address), exc)
                    failed.append(address)
                    continue
                if new and address not in adopted:
                    # Initiate now, as charon's start_action would, so that negotiations overlap
                    # the loading of the next peers instead of waiting for the first round.
                    self._start_initiation(address)
            self._dirty = True
            self._wake.notify_all()
        return failed

    def _load(self, peer: IkePeer) -> bool:
        """Load (or reload) ``peer``'s key and connection; True if it was not loaded before."""
        current = self._loaded.get(peer.address)
        reqid = current.reqid if current is not None else self._reqid(peer.address)
        message = connection(self.local, peer, reqid, self.timers)
        if current is not None and current.message == message and current.peer == peer:
            return False
        if isinstance(peer.auth, PskAuth):
            self.client.load_shared(shared_secret(self.local, peer))
        self.client.load_conn(message)
        now = self.clock()
        if current is None:
            tracker = PeerTracker(
                peer.address, peer.vpn_id, is_initiator(self.local, peer.address), self.policy, since=now
            )
            self._loaded[peer.address] = _Loaded(peer, reqid, message, tracker)
            log.info("ike: loaded %s (reqid %#x, %s)", conn_name(peer.address), reqid, _role(tracker))
        else:
            current.peer, current.message = peer, message
            log.info("ike: reloaded %s", conn_name(peer.address))
        return current is None

    def _remove(self, address: IPv4Address, why: str) -> None:
        """Section 3.6: delete the SAs with IKE (DELETE to the peer), unload, forget the key."""
        name = conn_name(address)
        with contextlib.suppress(Exception):  # nothing to terminate is fine
            self.client.terminate({"ike": name, "timeout": "3000", "force": "yes"})
        with contextlib.suppress(Exception):
            self.client.unload_conn(name)
        with contextlib.suppress(Exception):
            self.client.unload_shared(shared_secret_id(address))
        loaded = self._loaded.pop(address, None)
        self._kept_reqids.pop(address, None)
        if loaded is not None and self.kernel is not None:
            reqid = loaded.reqid
            with contextlib.suppress(Exception):
                self.counters["flushed"] += self.kernel.flush(lambda r: r == reqid)
        vpn_id = loaded.peer.vpn_id if loaded is not None else -1
        self._emit(TunnelEvent("removed", address, vpn_id, self.clock(), why))
        log.info("ike: removed %s (%s)", name, why)

    # -- tunnel state out ------------------------------------------------------------------------

    def drain_events(self) -> list[TunnelEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def status(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {
                str(a): x.tracker.status()
                | {"reqid": x.reqid, "auth": "psk" if isinstance(x.peer.auth, PskAuth) else "cert"}
                for a, x in sorted(self._loaded.items())
            }

    def loaded(self) -> dict[IPv4Address, IkePeer]:
        """The peers whose connections are loaded now (under :attr:`local`)."""
        with self._lock:
            return {a: x.peer for a, x in self._loaded.items()}

    def up_peers(self) -> set[IPv4Address]:
        with self._lock:
            return {a for a, x in self._loaded.items() if x.tracker.phase.value == "up"}

    def rekey(self, peer: IPv4Address) -> None:
        self.client.rekey(conn_name(peer))

    def _emit(self, event: TunnelEvent) -> None:
        self._events.append(event)
        if event.kind in ("failed", "alarm"):
            log.warning("ike: %s %s %s", event.kind, event.peer, event.detail)
        else:
            log.info("ike: %s %s", event.kind, event.peer)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("ike: event callback failed")

    # -- threads ---------------------------------------------------------------------------------

    def _listen(self) -> None:
        def handle(label: str, message: Mapping[str, object]) -> None:
            with self._wake:
                self._dirty = True
                self._wake.notify_all()

        while not self._stop.is_set():
            try:
                self.client.listen(self._stop, handle)
            except Exception as exc:  # charon went away (killed): the supervisor restarts it
                if self._stop.is_set():
                    return
                log.error("ike: lost charon's event stream: %s", exc)
                self.charon_lost.set()
                with self._wake:
                    self._dirty = True
                    self._wake.notify_all()
                self._stop.wait(1.0)

    def _work(self) -> None:
        last_poll = 0.0
        while not self._stop.is_set():
            with self._wake:
                if not self._dirty:
                    self._wake.wait(timeout=0.25)
                due = self._dirty or self.clock() - last_poll >= self.poll_interval
                self._dirty = False
            if self._stop.is_set():
                return
            if not due and not self._retry_due():
                continue
            last_poll = self.clock()
            try:
                self.round()
            except Exception as exc:
                log.error("ike: round failed: %s", exc)
                self._stop.wait(0.5)
            # A round costs a list-sas of every SA: seconds on a slow machine with many peers, in
            # charon and in this process, taken from the negotiations it is waiting for (measured
            # with 50 peers under TCG: 13 back-to-back list-sas, 34 s of a 47 s bring-up). Events arriving
            # meanwhile stay marked; at most a third of the time goes to rounds.
            self._stop.wait(min(ROUND_PAUSE_FACTOR * (self.clock() - last_poll), ROUND_PAUSE_MAX))

    def _retry_due(self) -> bool:
        now = self.clock()
        with self._lock:
            return any(
                x.tracker.initiator and not x.tracker.in_flight and x.tracker.phase.value != "up"
                and now >= x.tracker.next_try
                for x in self._loaded.values()
            )  # fmt: skip

    def round(self) -> None:
        """One pass: list the SAs, update every peer, drop duplicates, start due initiations."""
        listed = self.client.list_sas()
        now = self.clock()
        with self._lock:
            for address, loaded in sorted(self._loaded.items()):
                tracker = loaded.tracker
                view = conn_view(listed, conn_name(address))
                tracker.observe(view, now)
                if tracker.initiator:
                    for kind, uid in duplicates(view):
                        self._terminate_duplicate(address, kind, uid)
                if tracker.should_initiate(now, view):
                    self._start_initiation(address)
                elif not tracker.initiator:
                    tracker.check_timeout(now)
                for event in tracker.drain():
                    self._emit(event)

    def _start_initiation(self, address: IPv4Address) -> None:
        """The designated initiator's initiation, on the pool (call with the lock held)."""
        tracker = self._loaded[address].tracker
        if not tracker.initiator or tracker.in_flight:
            return
        tracker.in_flight = True
        self.counters["initiations"] += 1
        self._pool.submit(self._initiate, address)

    def _terminate_duplicate(self, address: IPv4Address, kind: str, uid: int) -> None:
        log.info("ike: %s has a duplicate SA (%s %d): terminating it", conn_name(address), kind, uid)
        self.counters["duplicates_terminated"] += 1
        self._pool.submit(self._quiet_terminate, {kind: str(uid), "timeout": "-1"})

    def _quiet_terminate(self, selector: Mapping[str, object]) -> None:
        with contextlib.suppress(Exception):
            self.client.terminate(selector)

    def _initiate(self, address: IPv4Address) -> None:
        name = conn_name(address)
        try:
            result = self.client.initiate(name, int(self.initiate_timeout * 1000))
        except Exception as exc:
            result = InitiateResult(False, (), f"{type(exc).__name__}: {exc}")
        with self._wake:
            loaded = self._loaded.get(address)
            if loaded is None:
                return
            loaded.tracker.in_flight = False
            if not result.ok:
                reason = classify_failure(result.lines, result.errmsg)
                loaded.tracker.failed(reason, self.clock())
                for event in loaded.tracker.drain():
                    self._emit(event)
            self._dirty = True
            self._wake.notify_all()


def _role(tracker: PeerTracker) -> str:
    return "initiator" if tracker.initiator else "responder"


def views(client: Vici, names: Collection[str]) -> dict[str, ConnView]:
    """Each named connection's SAs (for tests and the CLI's status)."""
    listed = client.list_sas()
    return {name: conn_view(listed, name) for name in names}
