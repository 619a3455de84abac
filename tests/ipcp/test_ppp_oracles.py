"""Independent decoders read what we encode: scapy's ``scapy.layers.ppp`` (and tshark where installed)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcp import strategies as ps
from ipcp.frame import Frame, Protocol, encode_frame
from ipcp.lcp_options import AsyncControlCharacterMap, MagicNumber, MaximumReceiveUnit
from ipcp.option import Option
from ipcp.packet import ConfigureAck, ConfigureNak, ConfigureReject, ConfigureRequest
from ipcp.rfc1332 import IpAddress
from ipcp.rfc1877 import NameServerOption, PrimaryDns, SecondaryDns
from ipcp.vpn_option import VpnIpAddresses

scapy_ppp = pytest.importorskip("scapy.layers.ppp")

pytestmark = pytest.mark.oracle

configure_classes = st.sampled_from([ConfigureRequest, ConfigureAck, ConfigureNak, ConfigureReject])


@settings(max_examples=200)
@given(configure_classes, ps.u8, st.lists(ps.ipcp_options, max_size=6))
def test_scapy_decodes_our_ipcp_packets_to_the_same_values(
    cls: type[ConfigureRequest], identifier: int, options: list[Option]
) -> None:
    packet = cls(identifier, tuple(options))
    theirs = scapy_ppp.PPP_IPCP(packet.encode())
    assert theirs.code == packet.code
    assert theirs.id == identifier
    assert theirs.len == len(packet.encode())
    assert len(theirs.options) == len(options)
    for mine, other in zip(options, theirs.options, strict=True):
        assert other.type == mine.type_code
        assert other.len == len(mine.encode())
        if isinstance(mine, IpAddress | NameServerOption):
            assert IPv4Address(other.data) == mine.address
        else:  # types 1, 2, VPN and unknown come out as scapy's generic option: raw data
            assert bytes(other.data) == mine.encode_data()


@settings(max_examples=200)
@given(configure_classes, ps.u8, st.lists(ps.lcp_options, max_size=6))
def test_scapy_decodes_our_lcp_packets_to_the_same_values(
    cls: type[ConfigureRequest], identifier: int, options: list[Option]
) -> None:
    packet = cls(identifier, tuple(options))
    theirs = scapy_ppp.PPP_LCP(packet.encode())
    assert isinstance(theirs, scapy_ppp.PPP_LCP_Configure)
    assert (theirs.code, theirs.id, theirs.len) == (packet.code, identifier, len(packet.encode()))
    assert [o.type for o in theirs.options] == [o.type_code for o in options]
    for mine, other in zip(options, theirs.options, strict=True):
        assert other.len == len(mine.encode())
        if isinstance(mine, MaximumReceiveUnit):
            assert other.max_recv_unit == mine.mru
        elif isinstance(mine, AsyncControlCharacterMap):
            assert other.accm == mine.accm
        elif isinstance(mine, MagicNumber):
            assert other.magic_number == mine.magic


def test_scapy_reads_our_frame_header() -> None:
    info = ConfigureNak(
        3, (IpAddress(IPv4Address("100.64.0.2")), PrimaryDns(IPv4Address("192.0.2.53")))
    ).encode()
    parsed = scapy_ppp.HDLC(encode_frame(Frame(Protocol.IPCP, info)))
    assert parsed.address == 0xFF
    assert parsed.control == 0x03
    assert parsed[scapy_ppp.PPP].proto == Protocol.IPCP
    assert bytes(parsed[scapy_ppp.PPP_IPCP]) == info


def _tshark_or_skip() -> str:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is required in CI (CI=true) but is not installed")
        pytest.skip("tshark not installed")
    return tshark


def test_tshark_decodes_our_ipcp_nak(tmp_path: Path) -> None:
    tshark = _tshark_or_skip()
    nak = ConfigureNak(
        3,
        (
            IpAddress(IPv4Address("100.64.0.2")),
            PrimaryDns(IPv4Address("192.0.2.53")),
            SecondaryDns(IPv4Address("192.0.2.54")),
            VpnIpAddresses(7, (IPv4Address("10.9.0.1"),)),
        ),
    )
    record = b"\x00" + encode_frame(Frame(Protocol.IPCP, nak.encode()))
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 204)
    pcap = tmp_path / "nak.pcap"
    pcap.write_bytes(header + struct.pack("<IIII", 0, 0, len(record), len(record)) + record)
    fields = ["ppp.code", "ipcp.opt.ip_address", "ipcp.opt.pri_dns_address", "ipcp.opt.sec_dns_address"]
    args = [tshark, "-r", str(pcap), "-T", "fields"] + [x for f in fields for x in ("-e", f)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    assert out.split("\t") == ["3", "100.64.0.2", "192.0.2.53", "192.0.2.54"]
