"""pppd 2.4.9's ``record`` files from our own VM runs (``vectors/pppd-2.4.9-vm/``), byte for byte.

Both sides' frames are in them exactly as they crossed the pty: pppd's (sent by its kernel's
ppp_async, opening flag omitted when the line was busy, ACCM 0 and PFC/ACFC once LCP is Opened) and
ours. For every frame: the FCS checks, the frame and its LCP/IPCP packet decode strictly and
re-encode to the same octets, and re-escaping with the ACCM the sender used gives the line bytes.
tshark reads the same files (its pppdump reader) and must agree with us frame by frame.
"""

from __future__ import annotations

import os
import shutil
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pppdump import Decoded, compare_with_tshark, decode_line_frame, line_frames

from ipcp.frame import Protocol
from ipcp.packet import (
    ConfigureAck,
    ConfigureNak,
    ConfigureReject,
    ConfigureRequest,
    Packet,
    TerminateAck,
    TerminateRequest,
)
from ipcp.rfc1332 import IpAddress, IpCompressionProtocol
from ipcp.rfc1877 import PrimaryDns, SecondaryDns
from ipcp.vpn_option import VpnIpAddresses

VECTORS = Path(__file__).parent / "vectors" / "pppd-2.4.9-vm"
SCENARIOS = ("ce_vs_pppd", "pppd_vs_nas")
A = IPv4Address


def stored(scenario: str) -> list[Decoded]:
    return [decode_line_frame(f) for f in line_frames((VECTORS / f"{scenario}.pppdump").read_bytes())]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_frame_byte_exact(scenario: str) -> None:
    frames = stored(scenario)
    assert len(frames) >= 15
    assert {f.from_pppd for f in frames} == {True, False}


@pytest.mark.oracle
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tshark_reads_the_captures_like_we_do(scenario: str) -> None:
    if shutil.which("tshark") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("tshark is not installed under CI")
        pytest.skip("tshark is not installed")
    compare_with_tshark(VECTORS / f"{scenario}.pppdump", stored(scenario))


def _packets(frames: list[Decoded], from_pppd: bool, protocol: int) -> list[Packet]:
    return [
        f.packet
        for f in frames
        if f.from_pppd == from_pppd and f.frame.protocol == protocol and f.packet is not None
    ]


def test_ce_vs_pppd_values() -> None:
    """pppd as NAS: VJ + its address; our VPN option rejected byte for byte; address and DNS by Nak."""
    frames = stored("ce_vs_pppd")
    pppd = _packets(frames, True, Protocol.IPCP)
    ours = _packets(frames, False, Protocol.IPCP)
    vpn = VpnIpAddresses(0)
    assert ours[0] == ConfigureRequest(
        1, (IpAddress(A("0.0.0.0")), PrimaryDns(A("0.0.0.0")), SecondaryDns(A("0.0.0.0")), vpn)
    )
    assert pppd[0] == ConfigureRequest(
        1, (IpCompressionProtocol.van_jacobson(15, True), IpAddress(A("100.64.0.1")))
    )
    assert ConfigureReject(1, (vpn,)) in pppd
    assert (
        ConfigureNak(
            2, (IpAddress(A("100.64.0.2")), PrimaryDns(A("192.0.2.53")), SecondaryDns(A("192.0.2.54")))
        )
        in pppd
    )
    assert (
        ConfigureAck(
            3, (IpAddress(A("100.64.0.2")), PrimaryDns(A("192.0.2.53")), SecondaryDns(A("192.0.2.54")))
        )
        in pppd
    )
    # pppd's kernel answered our echo request: an IPv4 frame from pppd, 100.64.0.1 -> 100.64.0.2, ICMP type 0.
    replies = [f.frame.information for f in frames if f.from_pppd and f.frame.protocol == Protocol.IPV4]
    assert replies
    assert (A(replies[0][12:16]), A(replies[0][16:20]), replies[0][20]) == (
        A("100.64.0.1"),
        A("100.64.0.2"),
        0,
    )
    lcp_ours, lcp_pppd = _packets(frames, False, Protocol.LCP), _packets(frames, True, Protocol.LCP)
    assert isinstance(lcp_ours[-1], TerminateRequest)
    assert lcp_pppd[-1] == TerminateAck(lcp_ours[-1].identifier)
    # Nothing after LCP's Terminate-Request: IPCP goes down with LCP, no Terminate of its own.
    assert frames[-2].packet == lcp_ours[-1]


def test_pppd_vs_nas_values() -> None:
    """pppd as client: asks VJ, 0.0.0.0 and DNS; our NAS rejects VJ, Naks address and DNS, no VPN option."""
    frames = stored("pppd_vs_nas")
    pppd = _packets(frames, True, Protocol.IPCP)
    ours = _packets(frames, False, Protocol.IPCP)
    zero = A("0.0.0.0")
    assert pppd[0] == ConfigureRequest(
        1,
        (IpCompressionProtocol.van_jacobson(15, True), IpAddress(zero), PrimaryDns(zero), SecondaryDns(zero)),
    )
    assert ours[0] == ConfigureRequest(1, (IpAddress(A("100.64.0.1")),))
    assert ConfigureReject(1, (IpCompressionProtocol.van_jacobson(15, True),)) in ours
    given = (IpAddress(A("100.64.0.2")), PrimaryDns(A("192.0.2.53")), SecondaryDns(A("192.0.2.54")))
    assert ConfigureNak(2, given) in ours
    assert ConfigureAck(3, given) in ours
    for packet in ours:
        assert not any(isinstance(o, VpnIpAddresses) for o in getattr(packet, "options", ()))
