"""VPN space in a VRF (draft-ietf-l3vpn-ce-based-02 section 2.2) on the model kernel: settings,
desired state, and the reconciler creating, using and removing the VRF device."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ce_runtime.keying import EpochFile, StaticKeying
from ce_runtime.model import KernelState, Op, Ownership, VrfSpec, apply_to_model
from ce_runtime.node import NodeError, NodeSettings, NodeState, VpnSettings, load_node_settings
from ce_runtime.runtime import Reconciler, RuntimeConfig, VpnConfig, desired_state, link_name, vrf_spec
from dhcp_client.events import Lease, LeaseBound, VpnPeersChanged

L = IPv4Address("192.0.2.1")
P = IPv4Address("192.0.2.2")
Q = IPv4Address("192.0.2.3")
LAN_P = IPv4Network("10.2.0.0/24")


class ModelKernel:
    def __init__(self) -> None:
        self.state = KernelState()

    def read(self) -> KernelState:
        return self.state

    def apply(self, op: Op) -> None:
        self.state = apply_to_model(self.state, [op])


class NoHooks:
    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        pass


def _keying(tmp_path: Path) -> StaticKeying:
    return StaticKeying({7: bytes(32), 8: bytes(range(32))}, EpochFile(tmp_path / "epochs.json"))


def test_desired_state_puts_the_vpn_into_its_vrf(tmp_path: Path) -> None:
    vpn = VpnConfig(7, frozenset({P, Q}), ((LAN_P, P),), table=1007, vrf="vpn7")
    state = desired_state(RuntimeConfig(L, (vpn,)), _keying(tmp_path), [], Ownership())
    assert state.vrfs == {vrf_spec("vpn7", 1007)}
    assert all(link.vrf == "vpn7" for link in state.links) and len(state.links) == 2
    assert {(r.dst, r.table) for r in state.routes} == {(LAN_P, 1007)}  # in the VRF's table, not main
    # Without peers the VPN has no tunnels, and no VRF either.
    empty = VpnConfig(7, frozenset(), table=1007, vrf="vpn7")
    assert desired_state(RuntimeConfig(L, (empty,)), _keying(tmp_path), [], Ownership()).vrfs == frozenset()


def test_vrf_configurations_that_would_mix_spaces_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        VpnConfig(7, frozenset({P}), vrf="vpn7")  # table 254 (main) is provider space
    with pytest.raises(ValueError, match="two tables"):
        RuntimeConfig(L, (VpnConfig(7, frozenset({P}), table=1007, vrf="v"),
                          VpnConfig(8, frozenset({Q}), table=1008, vrf="v")))  # fmt: skip
    with pytest.raises(ValueError, match="share a routing table"):
        RuntimeConfig(L, (VpnConfig(7, frozenset({P}), table=1007, vrf="v7"),
                          VpnConfig(8, frozenset({Q}), table=1007, vrf="v8")))  # fmt: skip
    with pytest.raises(ValueError, match="belongs to a VRF"):
        RuntimeConfig(L, (VpnConfig(7, frozenset({P}), table=1007, vrf="v7"),
                          VpnConfig(8, frozenset({Q}), table=1007)))  # fmt: skip
    # Two VPNs in one VRF is allowed (one routing space for both).
    RuntimeConfig(L, (VpnConfig(7, frozenset({P}), table=1007, vrf="v"),
                      VpnConfig(8, frozenset({Q}), table=1007, vrf="v")))  # fmt: skip


def test_reconciler_creates_uses_and_removes_its_vrf(tmp_path: Path) -> None:
    kernel = ModelKernel()
    rec = Reconciler(kernel, _keying(tmp_path), NoHooks())
    foreign = VrfSpec("mgmt", 50, "", slaves=frozenset({"eth9"}))
    kernel.state = KernelState(vrfs=frozenset({foreign}))
    both = RuntimeConfig(
        L,
        (
            VpnConfig(7, frozenset({P}), ((LAN_P, P),), table=1007, vrf="vpn7"),
            VpnConfig(8, frozenset({Q}), table=1007, vrf="vpn7"),
        ),
    )
    assert not rec.reconcile(both, now=0).failed
    assert kernel.state.vrfs == {foreign, vrf_spec("vpn7", 1007)}
    assert {link.vrf for link in kernel.state.links} == {"vpn7"}
    assert not rec.reconcile(both, now=1).applied  # idempotent
    # One VPN leaves: the VRF stays for the other.
    one = RuntimeConfig(L, (VpnConfig(8, frozenset({Q}), table=1007, vrf="vpn7"),))
    assert not rec.reconcile(one, now=2).failed
    assert vrf_spec("vpn7", 1007) in kernel.state.vrfs
    assert [link.name for link in kernel.state.links] == [link_name(Q)]
    # The VRF setting removed: the link leaves the VRF (kept: same tunnel), the VRF is deleted.
    plain = RuntimeConfig(L, (VpnConfig(8, frozenset({Q})),))
    assert not rec.reconcile(plain, now=3).failed
    assert kernel.state.vrfs == {foreign}
    assert [link.vrf for link in kernel.state.links] == [None]
    assert not rec.reconcile(RuntimeConfig(L), now=4).failed
    assert kernel.state == KernelState(vrfs=frozenset({foreign}))  # someone else's VRF untouched


def test_runtime_settings_vrf(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("00" * 32)
    os.chmod(tmp_path / "k", 0o600)
    config = tmp_path / "runtime.toml"
    config.write_text('[[vpn]]\nid = 7\nsecret_file = "k"\nvrf = "vpn7"\ntable = 1007\n')
    settings = load_node_settings(config)
    assert (settings.vpns[7].vrf, settings.vpns[7].table) == ("vpn7", 1007)
    config.write_text('[[vpn]]\nid = 7\nsecret_file = "k"\nvrf = "vpn7"\n')
    with pytest.raises(NodeError, match="needs its own table"):
        load_node_settings(config)


def test_node_state_carries_the_vrf() -> None:
    settings = NodeSettings(Path("/nonexistent"), {7: VpnSettings(7, bytes(32), table=1007, vrf="vpn7")})
    state = NodeState()
    state.apply(LeaseBound(Lease(L, IPv4Address("192.0.2.254"), 0.0, 600, 300, 525)))
    state.apply(VpnPeersChanged(7, frozenset({P}), frozenset(), frozenset({P})))
    config = state.config(settings)
    assert config is not None
    assert [(v.vrf, v.table) for v in config.vpns] == [("vpn7", 1007)]


def test_in_a_vrf_vpn_space_may_overlap_provider_space(tmp_path: Path) -> None:
    """Section 2.2: the two spaces may overlap; apart in two tables, a VPN route covering provider
    addresses cannot capture the tunnels' own packets (those are routed in main)."""
    overlap = ((IPv4Network("192.0.2.0/24"), P),)
    with pytest.raises(ValueError, match="covers provider addresses"):
        RuntimeConfig(L, (VpnConfig(7, frozenset({P}), overlap),))
    config = RuntimeConfig(L, (VpnConfig(7, frozenset({P}), overlap, table=1007, vrf="vpn7"),))
    state = desired_state(config, _keying(tmp_path), [], Ownership())
    assert {(r.dst, r.table) for r in state.routes} == {(IPv4Network("192.0.2.0/24"), 1007)}
    settings = NodeSettings(Path("/nonexistent"), {7: VpnSettings(7, bytes(32), overlap, 1007, "vpn7")})
    node = NodeState()
    node.apply(LeaseBound(Lease(L, IPv4Address("192.0.2.254"), 0.0, 600, 300, 525)))
    node.apply(VpnPeersChanged(7, frozenset({P}), frozenset(), frozenset({P})))
    vpn_config = node.config(settings)
    assert vpn_config is not None and vpn_config.vpns[0].routes == overlap
