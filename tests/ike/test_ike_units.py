"""ce_runtime.ike without charon: VICI messages, the tunnel state model, and the backend on a fake VICI."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from fake_vici import FakeKernel, FakeVici
from fake_vici import sa as _sa
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.ike.charon import CharonSettings
from ce_runtime.ike.config import (
    IKE_PRIORITY,
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
)
from ce_runtime.ike.state import (
    LIVE_CHILD,
    LIVE_IKE,
    ConnView,
    PeerTracker,
    Phase,
    RetryPolicy,
    classify_failure,
    conn_view,
    duplicates,
)
from ce_runtime.ike.vici_backend import IkeBackend, ViciClient

L = IPv4Address("192.0.2.1")
P = IPv4Address("192.0.2.2")
Q = IPv4Address("192.0.2.3")
KEY = PskAuth(b"0123456789abcdef-secret")


def test_connection_selects_only_ipip_between_the_pair_in_transport_mode() -> None:
    msg = connection(L, IkePeer(P, 7, KEY), IKE_REQID_BASE + 1)
    body = msg["ce-192.0.2.2"]
    assert isinstance(body, dict)
    child = body["children"]["ipip"]
    assert child["mode"] == "transport"
    assert child["local_ts"] == ["192.0.2.1/32[ipencap]"]
    assert child["remote_ts"] == ["192.0.2.2/32[ipencap]"]
    assert child["start_action"] == "trap"  # both sides: never ipip in the clear
    assert child["reqid"] == str(IKE_REQID_BASE + 1)
    assert child["priority"] == str(IKE_PRIORITY)
    assert body["local"] == {"auth": "psk", "id": "192.0.2.1"}
    assert body["remote"] == {"auth": "psk", "id": "192.0.2.2"}
    assert body["keyingtries"] == "1"  # the backend retries, not charon
    assert "0123456789abcdef" not in repr(msg)  # the key goes to load-shared only


def test_cert_connection_names_our_cert_and_the_ca() -> None:
    auth = CertAuth(b"CERT", b"CA")
    body = connection(L, IkePeer(P, 7, auth), IKE_REQID_BASE + 2)["ce-192.0.2.2"]
    assert isinstance(body, dict)
    assert body["local"] == {"auth": "pubkey", "id": "192.0.2.1", "certs": [b"CERT"]}
    assert body["remote"] == {"auth": "pubkey", "id": "192.0.2.2", "cacerts": [b"CA"]}


def test_reqid_range_is_disjoint_from_the_static_runtime() -> None:
    assert owned_reqid(IKE_REQID_BASE) and not owned_reqid(0xCE000007)
    with pytest.raises(ValueError, match="outside"):
        connection(L, IkePeer(P, 7, KEY), 0xCE000001)


def test_exactly_one_initiator_per_pair() -> None:
    assert is_initiator(L, P) and not is_initiator(P, L)
    with pytest.raises(ValueError, match="own peer"):
        is_initiator(L, L)


def test_names_and_secrets() -> None:
    assert peer_of_conn(conn_name(P)) == P
    assert peer_of_conn("other") is None and peer_of_conn("ce-nope") is None
    assert "0123" not in repr(KEY)
    with pytest.raises(ValueError, match="16 octets"):
        PskAuth(b"short")
    shared = shared_secret(L, IkePeer(P, 7, KEY))
    assert shared["owners"] == ["192.0.2.2"]  # the peer alone: the key serves this pair only
    with pytest.raises(ValueError, match="before expiry"):
        IkeTimers(child_rekey=100, child_life=100)


def test_strongswan_conf_has_the_measured_plugins_and_no_verbose_logging(tmp_path: Path) -> None:
    text = CharonSettings(certificates=False).render(tmp_path)
    load = next(line for line in text.splitlines() if "load =" in line).split("=")[1].split()
    assert set(load) == {"nonce", "openssl", "kdf", "kernel-netlink", "socket-default", "vici"}
    assert f"unix://{tmp_path}/charon.vici" in text
    assert "install_routes = no" in text
    with pytest.raises(ValueError, match="keying material"):
        CharonSettings(log_level=4).render(tmp_path)


def test_view_and_duplicates() -> None:
    name = conn_name(P)
    listed: list[Mapping[str, object]] = [
        {name: _sa(3, "ESTABLISHED", False, [(7, "INSTALLED", "o7")])},
        {name: _sa(2, "ESTABLISHED", True, [(5, "INSTALLED", "o5"), (6, "INSTALLED", "o6")])},
        {"ce-192.0.2.9": _sa(4, "ESTABLISHED", True, [(8, "INSTALLED", "x")])},
    ]
    view = conn_view(listed, name)
    assert view.up and len(view.established) == 2
    # Keep the IKE_SA we initiated; its newest child is the one in use; the other IKE_SA and the
    # older child go.
    assert view.spis == ("in6", "o6")
    assert duplicates(view) == [("ike-id", 3), ("child-id", 5)]
    rekeying = conn_view(
        [{name: _sa(2, "ESTABLISHED", True, [(5, "REKEYED", "a"), (6, "INSTALLED", "b")])}], name
    )
    assert duplicates(rekeying) == []  # a rekey's old SA is not a duplicate
    assert not conn_view([], name).up


def test_failure_classification() -> None:
    assert classify_failure(["received AUTHENTICATION_FAILED notify error"], "") == "auth-failed"
    assert classify_failure(["received NO_PROPOSAL_CHOSEN notify error"], "") == "no-proposal"
    assert classify_failure(["giving up after 4 retransmits"], "") == "unreachable"
    assert classify_failure(["tried 1 shared key for 'a' - 'b', but MAC mismatched"], "") == "auth-failed"
    assert classify_failure([], "Command failed: establishing CHILD_SA 'ipip' failed") == "failed"


def test_tracker_up_rekey_down_backoff_alarm() -> None:
    policy = RetryPolicy(min_interval=5, max_interval=20, alarm_after=3)
    t = PeerTracker(P, 7, True, policy, since=0.0)
    name = conn_name(P)
    up = conn_view([{name: _sa(1, "ESTABLISHED", True, [(1, "INSTALLED", "a")])}], name)
    t.observe(up, 1.0)
    t.observe(up, 2.0)  # nothing new
    rekeyed = conn_view([{name: _sa(1, "ESTABLISHED", True, [(2, "INSTALLED", "b")])}], name)
    t.observe(rekeyed, 3.0)
    t.observe(conn_view([], name), 4.0)
    assert [e.kind for e in t.drain()] == ["up", "rekeyed", "down"]
    assert t.phase == Phase.DOWN and t.next_try == 9.0  # section 3.4: after the minimum interval
    assert not t.should_initiate(8.0, conn_view([], name)) and t.should_initiate(9.0, conn_view([], name))
    for now in (10.0, 20.0, 40.0):
        t.failed("auth-failed", now)
    events = t.drain()
    assert [e.kind for e in events] == ["failed", "failed", "failed", "alarm"]
    assert t.next_try == 40.0 + 20  # 5, 10, 20 (capped)
    t.failed("auth-failed", 70.0)
    assert [e.kind for e in t.drain()] == ["failed"]  # the alarm is raised once
    t.observe(up, 80.0)
    assert t.failures == 0 and not t.alarmed and t.drain()[0].kind == "up"


def test_a_rekey_in_flight_is_neither_down_nor_rekeyed_until_the_new_child_is_installed() -> None:
    """What list-sas shows during make-before-break rekeys (the window a poll fell into in the VM)."""
    t = PeerTracker(P, 7, True, RetryPolicy(), since=0.0)
    name = conn_name(P)

    def at(*sas: tuple[int, str, list[tuple[int, str, str]]]) -> ConnView:
        return conn_view([{name: _sa(uid, state, True, children)} for uid, state, children in sas], name)

    t.observe(at((1, "ESTABLISHED", [(1, "INSTALLED", "a")])), 1.0)
    # CHILD_SA rekey: the old one REKEYING, the new one not installed yet; then both; then the new.
    t.observe(at((1, "ESTABLISHED", [(1, "REKEYING", "a"), (2, "INSTALLING", "b")])), 2.0)
    t.observe(at((1, "ESTABLISHED", [(1, "REKEYED", "a"), (2, "INSTALLED", "b")])), 3.0)
    t.observe(at((1, "ESTABLISHED", [(2, "INSTALLED", "b")])), 4.0)
    # IKE_SA rekey: the old IKE_SA REKEYING with the child, the new one connecting; then the
    # child (same SPIs) under the new IKE_SA.
    t.observe(at((1, "REKEYING", [(2, "INSTALLED", "b")]), (3, "CONNECTING", [])), 5.0)
    t.observe(at((1, "REKEYED", []), (3, "ESTABLISHED", [(2, "INSTALLED", "b")])), 6.0)
    t.observe(at((3, "ESTABLISHED", [(2, "INSTALLED", "b")])), 7.0)
    events = t.drain()
    assert [(e.kind, e.spis) for e in events] == [("up", ("in1", "a")), ("rekeyed", ("in2", "b"))]
    assert events[1].at == 3.0
    t.observe(at((3, "DELETING", [(2, "DELETING", "b")])), 8.0)
    assert [e.kind for e in t.drain()] == ["down"]


CHILD_STATES = ["CREATED", "INSTALLING", "INSTALLED", "UPDATING", "REKEYING", "REKEYED", "DELETING"]
IKE_STATES = ["CONNECTING", "ESTABLISHED", "REKEYING", "REKEYED", "DELETING"]


@st.composite
def _views(draw: st.DrawFn) -> ConnView:
    name = conn_name(P)
    sas = draw(
        st.lists(
            st.tuples(
                st.integers(1, 4),
                st.sampled_from(IKE_STATES),
                st.lists(st.tuples(st.integers(1, 6), st.sampled_from(CHILD_STATES)), max_size=3),
            ),
            max_size=3,
        )
    )
    return conn_view(
        [{name: _sa(u, state, True, [(c, cs, f"o{c}") for c, cs in children])} for u, state, children in sas],
        name,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_views(), min_size=1, max_size=20))
def test_tracker_reports_down_only_when_no_sa_carries_traffic(views: list[ConnView]) -> None:
    """Down exactly when nothing live is left; rekeyed only with new SPIs; up and down alternate."""
    t = PeerTracker(P, 7, True, RetryPolicy(), since=0.0)
    live = False
    spis: tuple[str, str] | None = None
    for now, view in enumerate(views, start=1):
        t.observe(view, float(now))
        was, live = (
            live,
            any(c.state in LIVE_CHILD for s in view.ike_sas if s.state in LIVE_IKE for c in s.children),
        )
        kinds = [e.kind for e in t.drain()]
        if live and not was:
            assert kinds == ["up"]
        elif was and not live:
            assert kinds == ["down"]
        elif live:
            assert kinds in ([], ["rekeyed"])
            assert (kinds == ["rekeyed"]) == (view.spis != spis)
        else:
            assert kinds == []
        spis = view.spis if live else None
        assert (t.phase == Phase.UP) == live


def test_responder_reports_a_peer_that_never_establishes() -> None:
    t = PeerTracker(Q, 7, False, RetryPolicy(establish_timeout=10, min_interval=1), since=0.0)
    assert not t.should_initiate(100.0, conn_view([], conn_name(Q)))  # never initiates
    t.check_timeout(5.0)
    assert t.drain() == []
    t.check_timeout(10.0)
    (event,) = t.drain()
    assert event.kind == "failed" and event.detail == "not established by the peer"


def test_backend_loads_initiates_reports_and_removes() -> None:
    vici = FakeVici()
    kernel = FakeKernel()
    now = [0.0]
    backend = IkeBackend(vici, L, kernel=kernel, clock=lambda: now[0], workers=1)
    backend.set_peers(L, [IkePeer(P, 7, KEY), IkePeer(IPv4Address("192.0.2.0"), 7, KEY)])
    assert ("load_shared", "ce-psk-192.0.2.2") in vici.calls and ("load_conn", "ce-192.0.2.2") in vici.calls
    status = backend.status()
    assert status["192.0.2.2"]["initiator"] is True and status["192.0.2.0"]["initiator"] is False
    assert {status[p]["reqid"] for p in status} == {IKE_REQID_BASE + 1, IKE_REQID_BASE + 2}

    reqid_p = status["192.0.2.2"]["reqid"]
    # The initiator side initiates as soon as it is loaded (no round needed); the responder waits.
    backend._pool.shutdown(wait=True)
    assert [c for c in vici.calls if c[0] == "initiate"] == [("initiate", "ce-192.0.2.2")]

    name = conn_name(P)
    vici.sas = [{name: _sa(1, "ESTABLISHED", True, [(1, "INSTALLED", "a")])}]
    backend.round()
    assert [e.kind for e in backend.drain_events()] == ["up"]
    assert backend.up_peers() == {P}

    before = len(vici.calls)
    backend.set_peers(L, [IkePeer(P, 7, KEY), IkePeer(IPv4Address("192.0.2.0"), 7, KEY)])
    assert len(vici.calls) == before  # unchanged peers: nothing reloaded

    backend.set_peers(L, [IkePeer(IPv4Address("192.0.2.0"), 7, KEY)])
    assert ("terminate", {"ike": name, "timeout": "3000", "force": "yes"}) in vici.calls
    assert ("unload_conn", name) in vici.calls and ("unload_shared", "ce-psk-192.0.2.2") in vici.calls
    assert kernel.flushes[-1] == [reqid_p]  # only the removed peer's reqid
    assert [e.kind for e in backend.drain_events()] == ["removed"]


def test_backend_failed_initiations_back_off_then_alarm() -> None:
    vici = FakeVici()
    vici.initiate_ok = False
    now = [0.0]
    policy = RetryPolicy(min_interval=1, max_interval=4, alarm_after=2)
    backend = IkeBackend(vici, L, policy=policy, clock=lambda: now[0], workers=1)
    backend.set_peers(L, [IkePeer(P, 7, KEY)])
    kinds: list[str] = []
    for t in (0.0, 0.5, 1.0, 2.9, 3.0):
        now[0] = t
        backend.round()
        backend._pool.shutdown(wait=True)  # the initiation has finished
        backend._pool = type(backend._pool)(max_workers=1)
        kinds += [f"{e.kind}:{e.detail}@{t}" for e in backend.drain_events()]
    # t=0 fails (retry at 1), t=0.5 waits, t=1 fails again -> alarm (retry at 3), t=3 fails.
    assert kinds == [
        "failed:auth-failed@0.0",
        "failed:auth-failed@1.0",
        "alarm:auth-failed@1.0",
        "failed:auth-failed@3.0",
    ]
    assert backend.status()["192.0.2.2"]["alarmed"] is True


def test_backend_start_flushes_only_our_range_and_adopts_when_attached() -> None:
    vici = FakeVici()
    kernel = FakeKernel()
    backend = IkeBackend(vici, L, kernel=kernel)
    backend.start(flush_stale=True)
    backend.stop()
    assert kernel.flushes == [[IKE_REQID_BASE + 1, IKE_REQID_BASE + 2]]

    vici = FakeVici()
    vici.conns = ["ce-192.0.2.2", "someone-else"]
    attached = IkeBackend(vici, L, kernel=FakeKernel())
    attached.start(flush_stale=False)
    attached.set_peers(L, [])  # ours but not desired: unloaded; the other daemon's untouched
    attached.stop()
    assert ("unload_conn", "ce-192.0.2.2") in vici.calls
    assert all(c[1] != "someone-else" for c in vici.calls)

    vici = FakeVici()
    vici.conns = ["ce-192.0.2.2"]
    vici.sas = [{"ce-192.0.2.2": _sa(1, "ESTABLISHED", True, [(1, "INSTALLED", "a")])}]
    adopting = IkeBackend(vici, L, kernel=FakeKernel(), workers=1)
    adopting._adopt()
    adopting.set_peers(L, [IkePeer(P, 7, KEY), IkePeer(Q, 7, KEY)])
    adopting._pool.shutdown(wait=True)
    # The adopted connection may have a live SA: only the round (which sees it up) decides; the
    # new one is initiated at once.
    assert [c for c in vici.calls if c[0] == "initiate"] == [("initiate", "ce-192.0.2.3")]
    vici.sas.append({"ce-192.0.2.3": _sa(2, "ESTABLISHED", True, [(2, "INSTALLED", "b")])})
    adopting._pool = type(adopting._pool)(max_workers=1)
    adopting.round()
    adopting._pool.shutdown(wait=True)
    assert [c for c in vici.calls if c[0] == "initiate"] == [("initiate", "ce-192.0.2.3")]
    assert [e.kind for e in adopting.drain_events()] == ["up", "up"]


def test_adopted_connections_keep_their_reqids_and_new_peers_take_none_of_them() -> None:
    """After churn (peers added and removed) the reqids are not in address order; an adopting
    runtime must not renumber: a reloaded connection with another reqid makes charon replace
    the policies under the live CHILD_SA."""
    r = IPv4Address("192.0.2.4")
    vici = FakeVici()
    vici.conns = [conn_name(P), conn_name(r)]
    kernel = FakeKernel({P: IKE_REQID_BASE + 3, r: IKE_REQID_BASE + 1, Q: 0xCE000007})
    backend = IkeBackend(vici, L, kernel=kernel, workers=1)
    backend._adopt()
    backend.set_peers(L, [IkePeer(P, 7, KEY), IkePeer(Q, 7, KEY), IkePeer(r, 7, KEY)])
    backend._pool.shutdown(wait=True)
    reqids = {peer: state["reqid"] for peer, state in backend.status().items()}
    # P and r keep theirs; Q (new; its policy in the kernel is not charon's) takes the lowest free.
    assert reqids == {str(P): IKE_REQID_BASE + 3, str(Q): IKE_REQID_BASE + 2, str(r): IKE_REQID_BASE + 1}
    backend.set_peers(L, [IkePeer(Q, 7, KEY)])  # P and r leave: their reqids are free again
    backend._pool = type(backend._pool)(max_workers=1)
    backend.set_peers(L, [IkePeer(Q, 7, KEY), IkePeer(P, 7, KEY)])
    backend._pool.shutdown(wait=True)
    assert backend.status()[str(P)]["reqid"] == IKE_REQID_BASE + 1


def test_backend_refuses_itself_as_peer() -> None:
    backend = IkeBackend(FakeVici(), L)
    with pytest.raises(ValueError, match="own peer"):
        backend.set_peers(L, [IkePeer(L, 7, KEY)])


def test_vici_client_waits_for_room_in_a_full_accept_backlog(tmp_path: Path) -> None:
    """A busy charon's full backlog makes connect fail with EAGAIN at once: the client retries."""
    path = tmp_path / "vici.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(0)
        queued: list[socket.socket] = []
        while True:  # fill the backlog (nobody accepts yet)
            probe = socket.socket(socket.AF_UNIX)
            probe.setblocking(False)
            try:
                probe.connect(str(path))
            except BlockingIOError:
                probe.close()
                break
            queued.append(probe)
        accepted: list[socket.socket] = []

        def accept_all() -> None:
            server.settimeout(5)
            for _ in range(len(queued) + 1):
                accepted.append(server.accept()[0])

        timer = threading.Timer(0.3, accept_all)
        timer.start()
        try:
            client = ViciClient(path, connect_timeout=5)
            client.close()
        finally:
            timer.join()
            for sock in queued + accepted:
                sock.close()
