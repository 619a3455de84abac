"""IKE keying wired into the CE node (ce_runtime.ike.wiring): settings, the order of changes between
charon and the kernel, events, liveness, status, charon supervision — on the model kernel, a fake
VICI and a fake charon. The real thing runs in the micro-VM (tests/e2e/test_ike_scenario_vm.py)."""

from __future__ import annotations

import asyncio
import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from fake_vici import FakeKernel, FakeVici, sa
from test_node import Clock, FakeHello, Hooks, ModelKernel

from ce_runtime.ike.config import IKE_PRIORITY, CertAuth, PskAuth, conn_name
from ce_runtime.ike.state import RetryPolicy
from ce_runtime.ike.wiring import IkeKeying, IkeSettings, IkeSettingsError, IkeVpnAuth, vpn_auth
from ce_runtime.keying import EpochFile, StaticKeying
from ce_runtime.model import ALIAS_PREFIX, KernelState, LinkSpec, Op, Ownership
from ce_runtime.node import NodeError, NodeSettings, TunnelNode, VpnSettings, load_node_settings
from ce_runtime.runtime import Backoff, RuntimeConfig, VpnConfig, desired_state, link_name, tunnel_mtu
from ce_runtime.xfrm import Action, Direction, PolicySpec
from dhcp_client.events import Lease, LeaseBound, LeaseLost, LeaseRenewed, VpnPeersChanged

L = IPv4Address("10.66.0.100")
L2 = IPv4Address("10.66.0.150")
P = IPv4Address("10.66.0.101")  # VPN 100, static keying
Q = IPv4Address("10.66.0.102")  # VPN 200, IKE (we, the lower address, initiate)
R = IPv4Address("10.66.0.103")  # VPN 200, IKE
SRV = IPv4Address("10.66.0.1")
LAN_Q = IPv4Network("10.3.0.0/24")
KEY = PskAuth(b"a pre-shared key of 32 octets...")


def _lease(address: IPv4Address) -> Lease:
    return Lease(address, SRV, 0.0, 600, 300, 525)


def _peers(vpn_id: int, *peers: IPv4Address) -> VpnPeersChanged:
    return VpnPeersChanged(vpn_id, frozenset(peers), frozenset(), frozenset(peers))


class JournalKernel(ModelKernel):
    """The model kernel, writing each operation into the journal it shares with the fake VICI."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    def apply(self, op: Op) -> None:
        super().apply(op)
        obj = getattr(op, "link", None) or getattr(op, "route", None) or getattr(op, "sa", None)
        self.journal.append(f"{type(op).__name__} {getattr(obj, 'remote', getattr(obj, 'link', ''))}")


class FakeCharon:
    def __init__(self, path: Path) -> None:
        self.socket_path = path
        self.alive = False
        self.left_running = False  # a predecessor's instance that adopt() finds
        self.starts = self.kills = self.stops = 0

    def adopt(self) -> bool:
        self.alive = self.left_running
        return self.alive

    def start(self, timeout: float = 30.0) -> float:
        self.alive = True
        self.starts += 1
        return 0.01

    def running(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.alive = False
        self.kills += 1

    def stop(self, timeout: float = 10.0) -> None:
        self.alive = False
        self.stops += 1


class Rig:
    """A node with static VPN 100 (peer P) and IKE VPN 200 (peers Q, R), all fakes sharing one journal."""

    def __init__(self, tmp_path: Path, on_exit: str = "keep") -> None:
        self.journal: list[str] = []
        self.vici = FakeVici(self.journal)
        self.repair = FakeKernel()
        self.kernel = JournalKernel(self.journal)
        self.charon = FakeCharon(tmp_path / "ike" / "charon.vici")
        self.hooks, self.hello, self.clock = Hooks(), FakeHello(), Clock()
        self.emitted: list[dict[str, Any]] = []
        auth = IkeVpnAuth(psk=KEY)
        ike = IkeSettings(run_dir=tmp_path / "ike", on_exit=on_exit)
        self.settings = NodeSettings(
            state_dir=tmp_path,
            vpns={
                100: VpnSettings(100, bytes(32)),
                200: VpnSettings(200, b"", ((LAN_Q, Q),), ike=auth),
            },
            debounce=0.01,
            interval=3600.0,
            dead_after=6.0,
            backoff=Backoff(min_interval=2.0, max_interval=8.0, alarm_after=3),
            ike=ike,
        )
        self.ike = IkeKeying(
            ike,
            {200: auth},
            RetryPolicy(min_interval=2.0, max_interval=8.0, alarm_after=3),
            charon=self.charon,
            connect=lambda _: self.vici,
            kernel=self.repair,
            threads=False,  # the test drives the backend's rounds
            backend_options={"workers": 1, "clock": self.clock},
        )
        keying = StaticKeying({100: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
        self.node = TunnelNode(
            self.settings, lambda: self.kernel, keying, self.hooks, hello=self.hello, clock=self.clock,
            emit=self.emitted.append, ike=self.ike,
        )  # fmt: skip

    def round(self, *events: Any) -> None:
        for event in events:
            self.node.on_event(event)
        asyncio.run(self.node.reconcile_now())

    def charon_round(self) -> None:
        """One backend round (list-sas, events, initiations), its initiations finished."""
        backend = self.ike.backend
        assert backend is not None
        backend.round()
        backend._pool.submit(lambda: None).result()  # one worker: the initiations before it are done
        backend.round()

    def tick(self) -> bool:
        repair = self.node.tick(self.clock.now)
        self.node._executor.submit(lambda: None).result()  # hooks run on the worker thread
        return repair

    def up(self, *peers: IPv4Address) -> None:
        self.vici.sas = [{conn_name(p): sa(n, "ESTABLISHED", True, [(n, "INSTALLED", f"o{n}")])}
                         for n, p in enumerate(peers, 1)]  # fmt: skip

    def at(self, entry: str) -> int:
        assert entry in self.journal, self.journal
        return self.journal.index(entry)


def _remotes(kernel: ModelKernel) -> set[IPv4Address]:
    return {link.remote for link in kernel.state.links}


def test_desired_state_gives_ike_peers_links_routes_and_guards_but_no_sas(tmp_path: Path) -> None:
    config = RuntimeConfig(
        L, (VpnConfig(100, frozenset({P})), VpnConfig(200, frozenset({Q}), ((LAN_Q, Q),), ike=True))
    )
    keying = StaticKeying({100: bytes(32)}, EpochFile(tmp_path / "epochs.json"))
    state = desired_state(config, keying, (), Ownership())
    assert {link.remote for link in state.links} == {P, Q}
    assert {r.dst for r in state.routes} == {LAN_Q}
    assert {a for s in state.sas for a in (s.src, s.dst)} == {L, P}  # none for Q: charon's
    allowed = {x for x in state.policies if x.action == Action.ALLOW}
    assert {a for x in allowed for a in (x.src, x.dst)} == {L, P}
    # Q's only policies are the guards: ipip to and from Q blocked unless charon's policy is there.
    assert state.policies - allowed == {
        PolicySpec(IPv4Address(0), Q, Direction.OUT, 0, 0xCFFF, action=Action.BLOCK, src_prefix=0),
        PolicySpec(Q, IPv4Address(0), Direction.IN, 0, 0xCFFF, action=Action.BLOCK, dst_prefix=0),
    }
    assert Ownership().guard_priority > IKE_PRIORITY  # charon's protecting policies win


def test_connections_before_links_links_before_unloading_and_hooks_from_charon(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.round(LeaseBound(_lease(L)), _peers(100, P), _peers(200, Q, R))
    # Each IKE peer's connection (its trap policy) exists before its link: never ipip in the clear.
    assert rig.at(f"load {conn_name(Q)}") < rig.at(f"AddLink {Q}")
    assert rig.at(f"load {conn_name(R)}") < rig.at(f"AddLink {R}")
    assert _remotes(rig.kernel) == {P, Q, R}
    assert {r.dst for r in rig.kernel.state.routes} == {LAN_Q}
    assert {a for s in rig.kernel.state.sas for a in (s.src, s.dst)} == {L, P}  # static VPN only
    assert rig.charon.starts == 1 and rig.repair.flushes  # a fresh charon: leftovers flushed first
    assert rig.hooks.events == [("up", P)]  # an IKE link alone is not a tunnel
    # Unchanged desired peers: nothing reloaded by the next round.
    loads = len(rig.vici.calls)
    rig.round()
    assert len(rig.vici.calls) == loads

    rig.up(Q)
    rig.charon_round()
    rig.tick()
    assert ("up", Q) in rig.hooks.events and ("up", R) not in rig.hooks.events
    # Liveness watches P (static) and Q (SAs up); R has no SA yet: no hello that would make the
    # responding side's kernel acquire, no "dead" report: its state is the backend's.
    assert {peer for _, peer, _ in rig.hello.sent} == {P, Q}
    status = rig.node.status(rig.clock.now)
    assert status["tunnels"][str(Q)]["keying"] == "ike" and status["tunnels"][str(P)]["keying"] == "static"
    assert status["tunnels"][str(Q)]["ike"]["phase"] == "up"
    assert status["tunnels"][str(R)]["ike"]["phase"] == "connecting"
    assert status["tunnels"][str(R)]["health"] == "pending"
    assert status["counters"]["ike_charon_starts"] == 1

    # Q leaves: its link and route go first, then its connection.
    rig.round(VpnPeersChanged(200, frozenset(), frozenset({Q}), frozenset({R})))
    assert rig.at(f"DelLink {Q}") < rig.at(f"unload {conn_name(Q)}")
    assert _remotes(rig.kernel) == {P, R} and rig.kernel.state.routes == frozenset()  # the route with it
    rig.tick()
    assert rig.hooks.events.count(("down", Q)) == 1  # from charon's "removed", not the link too
    assert ("down", R) not in rig.hooks.events  # never up: no "down"
    rig.node.close()


def test_wrong_key_fails_backs_off_and_alarms_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.vici.initiate_ok = False  # AUTHENTICATION_FAILED
    rig.round(LeaseBound(_lease(L)), _peers(200, Q))
    for _ in range(4):
        rig.charon_round()
        rig.clock.now += 8.0  # past any backoff
    rig.tick()
    failed = [e for e in rig.emitted if e["event"] == "TunnelFailed"]
    assert failed and all(e["detail"] == "auth-failed" and e["peer"] == str(Q) for e in failed)
    assert rig.hooks.events == [("alarm", Q)]  # once, after alarm_after (3) failures
    status = rig.node.status(rig.clock.now)
    assert status["counters"]["alarms"] == 1 and status["counters"]["ike_failures"] == len(failed) >= 3
    assert status["tunnels"][str(Q)]["health"] == "dead"
    assert status["tunnels"][str(Q)]["ike"]["alarmed"] is True
    assert status["tunnels"][str(Q)]["ike"]["last_error"] == "auth-failed"
    rig.node.close()


def test_a_lost_charon_is_restarted_flushed_and_reloaded(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.round(LeaseBound(_lease(L)), _peers(200, Q))
    rig.up(Q)
    rig.charon_round()
    rig.tick()
    assert rig.hooks.events == [("up", Q)]
    index = rig.node.indexes[Q]
    rig.charon.alive = False  # killed
    rig.vici.sas = []
    assert rig.tick()  # a round is asked for
    loads = rig.vici.calls.count(("load_conn", conn_name(Q)))
    rig.round()
    assert rig.charon.kills == 1 and rig.charon.starts == 2
    assert len(rig.repair.flushes) == 2  # the new instance starts from a clean reqid range
    assert rig.vici.calls.count(("load_conn", conn_name(Q))) == loads + 1
    assert rig.node.indexes[Q] == index  # the link was never touched
    rig.tick()
    assert rig.hooks.events == [("up", Q), ("down", Q)]
    rig.up(Q)
    rig.charon_round()
    rig.tick()
    assert rig.hooks.events == [("up", Q), ("down", Q), ("up", Q)]
    assert rig.node.status(rig.clock.now)["counters"]["ike_charon_restarts"] == 1
    rig.node.close()


def test_a_restart_adopts_the_charon_left_running(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.charon.left_running = True
    rig.round(LeaseBound(_lease(L)), _peers(200, Q))
    assert rig.charon.starts == 0 and rig.repair.flushes == []  # its SAs are live: nothing flushed
    assert _remotes(rig.kernel) == {Q}
    rig.node.close()
    assert rig.charon.stops == 0 and ("unload_conn", conn_name(Q)) not in rig.vici.calls  # on_exit keep


def test_a_predecessors_connection_is_unloaded_only_after_its_link(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.charon.left_running = True  # adopted: its connections are the killed runtime's
    rig.vici.conns = [conn_name(R), "someone-else"]
    stale = LinkSpec(link_name(R), L, R, tunnel_mtu(1500), f"{ALIAS_PREFIX}vpn=200 peer={R}")
    rig.kernel.state = KernelState(links=frozenset({stale}))  # R left the VPN while we were down
    rig.round(LeaseBound(_lease(L)), _peers(200, Q))
    assert rig.at(f"DelLink {R}") < rig.at(f"unload {conn_name(R)}")
    assert rig.at(f"load {conn_name(Q)}") < rig.at(f"AddLink {Q}")
    assert _remotes(rig.kernel) == {Q}
    assert all(c[1] != "someone-else" for c in rig.vici.calls)  # not ours: never touched
    rig.node.close()


def test_on_exit_stop_deletes_ike_links_before_unloading_and_keeps_static_ones(tmp_path: Path) -> None:
    rig = Rig(tmp_path, on_exit="stop")
    rig.round(LeaseBound(_lease(L)), _peers(100, P), _peers(200, Q))
    rig.node.close()
    assert rig.at(f"DelLink {Q}") < rig.at(f"unload {conn_name(Q)}")
    assert _remotes(rig.kernel) == {P}
    assert rig.charon.stops == 1


def test_a_new_address_rebuilds_ike_tunnels_in_one_round(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.round(LeaseBound(_lease(L)), _peers(200, Q))
    rig.journal.clear()
    rig.round(LeaseRenewed(_lease(L2)))
    assert {(link.local, link.remote) for link in rig.kernel.state.links} == {(L2, Q)}
    # Old link gone before the old connection; the new connection loaded before the new link.
    assert rig.at(f"DelLink {Q}") < rig.at(f"unload {conn_name(Q)}") < rig.at(f"load {conn_name(Q)}")
    assert rig.at(f"load {conn_name(Q)}") < rig.at(f"AddLink {Q}")
    assert rig.ike.backend is not None and rig.ike.backend.local == L2
    rig.round(LeaseLost(L2, "expired"))
    assert rig.kernel.state == KernelState()
    assert rig.ike.backend.loaded() == {}
    rig.node.close()


def test_a_connection_charon_refuses_gets_no_link(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    def refuse(message: Any) -> None:
        if conn_name(R) in message:
            raise OSError("refused")
        FakeVici.load_conn(rig.vici, message)

    rig.vici.load_conn = refuse  # type: ignore[method-assign]
    rig.round(LeaseBound(_lease(L)), _peers(200, Q, R))
    assert _remotes(rig.kernel) == {Q}  # R: no trap policy, so no link (it would send in the clear)
    rig.node.close()


def _files(tmp_path: Path, **files: str) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        os.chmod(path, 0o600)


def test_settings_ike_vpns_with_psk_pairs_and_certificates(tmp_path: Path) -> None:
    _files(tmp_path, **{"s.key": "00" * 32, "v.psk": "a" * 64, "q.psk": "b" * 64, "k.der": "KEY"})
    (tmp_path / "c.der").write_bytes(b"CERT")
    (tmp_path / "ca.der").write_bytes(b"CA")
    from test_revocation import make_crl  # noqa: PLC0415

    (tmp_path / "ca.crl").write_bytes(make_crl({3}))
    config = tmp_path / "runtime.toml"
    config.write_text(
        '[ike]\ndpd_delay = 5\non_exit = "stop"\n'
        '[[vpn]]\nid = 100\nsecret_file = "s.key"\n'
        '[[vpn]]\nid = 200\nkeying = "ike"\npsk_file = "v.psk"\n'
        'pairs = [{ peer = "10.66.0.102", psk_file = "q.psk" }]\n'
        '[[vpn]]\nid = 300\nkeying = "ike"\ncert_file = "c.der"\nkey_file = "k.der"\nca_file = "ca.der"\n'
        'crl_file = "ca.crl"\npairs = [{ peer = "10.66.0.101", psk_file = "q.psk" }]\n'
    )
    settings = load_node_settings(config)
    assert settings.vpns[100].keying == "static" and settings.vpns[200].keying == "ike"
    assert settings.ike is not None and settings.ike.run_dir == tmp_path / "runtime-state" / "ike"
    assert settings.ike.timers.dpd_delay == 5 and settings.ike.on_exit == "stop"
    auth = settings.vpns[200].ike
    assert auth is not None
    assert auth.auth_for(Q) == PskAuth(b"b" * 64) and auth.auth_for(R) == PskAuth(b"a" * 64)
    cert = settings.vpns[300].ike
    assert cert is not None and cert.key == ("ecdsa", b"KEY") and cert.crl_file == tmp_path / "ca.crl"
    assert isinstance(cert.auth_for(R), CertAuth) and cert.auth_for(P) == PskAuth(b"b" * 64)  # a pair's PSK
    assert "aaaa" not in repr(settings) and "KEY" not in repr(settings)
    state = NodeSettings(tmp_path, settings.vpns)
    from ce_runtime.node import NodeState  # noqa: PLC0415

    ns = NodeState(local=L, peers={200: frozenset({Q})})
    built = ns.config(state)
    assert built is not None and built.vpns[0].ike


@pytest.mark.parametrize(
    ("vpn", "error"),
    [
        ('keying = "ike"\npsk_file = "open.psk"',
         r"\[\[vpn\]\] id = 200\.psk_file .*open\.psk: must not be .*chmod 600"),
        ('keying = "ike"\npsk_file = "short.psk"', r"id = 200\.psk_file .*short\.psk: 5 octets"),
        ('keying = "ike"\npsk_file = "missing.psk"', r"id = 200\.psk_file .*missing\.psk: No such file"),
        ('keying = "ike"', r"id = 200: keying = \"ike\" needs psk_file"),
        ('keying = "ikev1"\npsk_file = "v.psk"', r"id = 200\.keying: \"static\" or \"ike\""),
        ('keying = "ike"\ncert_file = "v.psk"', r"id = 200: certificate mode needs ca_file, key_file too"),
        ('keying = "ike"\npsk_file = "v.psk"\ncert_file = "a"\nkey_file = "b"\nca_file = "c"',
         r"id = 200: psk_file or certificates"),
        ('keying = "ike"\npairs = [{ peer = "10.66.0.999", psk_file = "v.psk" }]',
         r"id = 200\.pairs\[0\]\.peer"),
        ('psk_file = "v.psk"\nsecret_file = "v.psk"', r"id = 200: psk_file only with keying = \"ike\""),
        ('keying = "ike"\nsecret_file = "v.psk"', r"id = 200: secret_file is for static keying"),
    ],
)  # fmt: skip
def test_settings_errors_name_the_file_and_the_field(tmp_path: Path, vpn: str, error: str) -> None:
    _files(tmp_path, **{"v.psk": "a" * 64, "short.psk": "abcde"})
    (tmp_path / "open.psk").write_text("a" * 64)
    os.chmod(tmp_path / "open.psk", 0o644)
    config = tmp_path / "runtime.toml"
    config.write_text(f"[[vpn]]\nid = 200\n{vpn}\n")
    with pytest.raises(NodeError, match=f"^{tmp_path}/runtime.toml: .*{error}") as caught:
        load_node_settings(config)
    assert "a" * 32 not in str(caught.value)  # never the key


@pytest.mark.parametrize(
    ("ike", "error"),
    [
        ('charon = "attach"', r"\[ike\]: charon = \"attach\" needs socket"),
        ('charon = "mine"', r"\[ike\]\.charon"),
        ('on_exit = "never"', r"\[ike\]\.on_exit"),
        ("child_rekey = 600\nchild_life = 300", r"\[ike\]: child_life must exceed child_rekey"),
        ("bogus = 1", r"unknown settings \['ike.bogus'\]"),
    ],
)
def test_ike_section_errors(tmp_path: Path, ike: str, error: str) -> None:
    _files(tmp_path, **{"v.psk": "a" * 64})
    config = tmp_path / "runtime.toml"
    config.write_text(f'[ike]\n{ike}\n[[vpn]]\nid = 200\nkeying = "ike"\npsk_file = "v.psk"\n')
    with pytest.raises(NodeError, match=f"runtime.toml: .*{error}"):
        load_node_settings(config)


def test_attach_mode_settings(tmp_path: Path) -> None:
    _files(tmp_path, **{"v.psk": "a" * 64})
    config = tmp_path / "runtime.toml"
    config.write_text(
        '[ike]\ncharon = "attach"\nsocket = "/run/charon.vici"\n[[vpn]]\nid = 200\nkeying = "ike"\n'
        'psk_file = "v.psk"\n'
    )
    settings = load_node_settings(config)
    assert settings.ike is not None and settings.ike.attach == Path("/run/charon.vici")


def test_json_config_of_python_m_ce_runtime_with_an_ike_vpn(tmp_path: Path) -> None:
    from ce_runtime.__main__ import load_config, load_ike  # noqa: PLC0415

    _files(tmp_path, **{"s.key": "00" * 32, "v.psk": "a" * 64})
    config = tmp_path / "ce.json"
    config.write_text(
        '{"local": "10.66.0.100", "ike": {"dpd_delay": 4},'
        ' "vpns": [{"vpn_id": 100, "peers": ["10.66.0.101"], "secret_file": "s.key"},'
        '          {"vpn_id": 200, "peers": ["10.66.0.102"], "keying": "ike", "psk_file": "v.psk"}]}'
    )
    runtime, secrets = load_config(config)
    assert [(v.vpn_id, v.ike) for v in runtime.vpns] == [(100, False), (200, True)]
    assert list(secrets) == [100]
    ike = load_ike(config, tmp_path / "state")
    assert ike is not None and ike.settings.timers.dpd_delay == 4
    assert ike.settings.run_dir == tmp_path / "state" / "ike"
    assert set(ike.peers_for(runtime)) == {Q}
    os.chmod(tmp_path / "v.psk", 0o640)
    with pytest.raises(SystemExit, match=r"ce.json: vpns\[1\] \(vpn_id 200\)\.psk_file .*chmod 600"):
        load_ike(config, tmp_path / "state")


def test_a_crl_that_revokes_more_re_authenticates_the_certificate_peers(tmp_path: Path) -> None:
    """CRLs go to charon before any connection and again when the file changes; only a CRL that
    revokes something new terminates the certificate peers' IKE_SAs (charon checks revocation
    at authentication only); a PSK peer of the same VPN is left alone; a broken file changes
    nothing."""
    from test_revocation import make_crl  # noqa: PLC0415 - tests/ike is on the path

    crl = tmp_path / "vpn.crl"
    crl.write_bytes(make_crl({5}, 1))
    auth = IkeVpnAuth(pairs={R: KEY}, cert=CertAuth(b"cert", b"ca"), key=("ecdsa", b"key"), crl_file=crl)
    vici = FakeVici([])
    ike = IkeKeying(
        IkeSettings(run_dir=tmp_path / "ike"), {200: auth}, RetryPolicy(),
        charon=FakeCharon(tmp_path / "ike" / "charon.vici"), connect=lambda _: vici, kernel=FakeKernel(),
        threads=False, backend_options={"workers": 1},
    )  # fmt: skip
    config = RuntimeConfig(L, (VpnConfig(200, frozenset({Q, R}), ike=True),))

    def calls(kind: str) -> list[object]:
        return [c[1] for c in vici.calls if c[0] == kind]

    ike.before(config)
    assert vici.journal is not None and vici.journal[0] == "load_cert x509crl"  # before any connection
    ike.before(config)
    assert calls("load_cert") == ["x509crl"] and calls("terminate") == []  # unchanged: nothing
    crl.write_bytes(make_crl({5}, 2) + b"")  # re-issued, nothing new revoked
    os.utime(crl, ns=(1, 1))
    ike.before(config)
    assert len(calls("load_cert")) == 2 and calls("terminate") == []
    crl.write_bytes(b"not a CRL")
    ike.before(config)
    assert len(calls("load_cert")) == 2 and calls("terminate") == []
    crl.write_bytes(make_crl({5, 6}, 3))
    ike.before(config)
    assert len(calls("load_cert")) == 3
    assert calls("terminate") == [{"ike": conn_name(Q), "timeout": "3000", "force": "yes"}]  # not R (PSK)
    assert calls("flush_certs") == ["x509crl"] * 3  # charon's cache would answer with the old CRL
    assert ike.counters["crl_reauthentications"] == 1
    ike.close(stop=True)


def test_crl_file_is_for_certificate_mode_and_must_be_a_crl(tmp_path: Path) -> None:
    from test_revocation import make_crl  # noqa: PLC0415

    for name in ("c.der", "ca.der"):
        (tmp_path / name).write_bytes(b"x")
    key = tmp_path / "k.der"
    key.write_bytes(b"k")
    os.chmod(key, 0o600)
    psk = tmp_path / "p.psk"
    psk.write_text("a pre-shared key of 32 octets...")
    os.chmod(psk, 0o600)
    rel = lambda p: tmp_path / str(p)  # noqa: E731
    with pytest.raises(IkeSettingsError, match=r"vpn\.crl_file: only with certificates"):
        vpn_auth({"psk_file": "p.psk", "crl_file": "v.crl"}, "vpn", rel)
    certs = {"cert_file": "c.der", "key_file": "k.der", "ca_file": "ca.der", "crl_file": "v.crl"}
    with pytest.raises(IkeSettingsError, match=r"vpn\.crl_file .*v\.crl: No such file"):
        vpn_auth(certs, "vpn", rel)
    (tmp_path / "v.crl").write_bytes(b"junk")
    with pytest.raises(IkeSettingsError, match=r"not an X\.509 CRL"):
        vpn_auth(certs, "vpn", rel)
    (tmp_path / "v.crl").write_bytes(make_crl(set(), pem=True))
    assert vpn_auth(certs, "vpn", rel).crl_file == tmp_path / "v.crl"
