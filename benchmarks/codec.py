"""Decode and encode rates of ce-autoconf's DHCP codec against dpkt and scapy, in one run.

Usage: .venv/bin/python benchmarks/codec.py [--seconds S]

Messages: (a) a real DHCPDISCOVER sent by dhcpcd 9.4.1 (delayed authentication), taken
from ../shared/vectors when present, else built to the same shape; (b) a DHCPACK with
delayed authentication and a Peer-CE list of 100 addresses, built and signed by us.
Each figure is the best of several timed batches (messages per second).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import dpkt
from scapy.layers.dhcp import BOOTP

from options import (
    BOOTREPLY,
    BOOTREQUEST,
    PEER_CE,
    DhcpMessage,
    MessageType,
    Options,
    decode_message,
    encode_message,
    rfc2132,
    rfc3118,
)
from options.vpn import full_sync_blocks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "dhcpcd-9.4.1"
KEY = b"rdc-secret-key-1"


def discover() -> bytes:
    """dhcpcd's own DISCOVER (01_discover_delayed.pcap), or one of the same shape."""
    capture = SHARED / "01_discover_delayed.pcap"
    if capture.exists():
        with capture.open("rb") as f:
            for _, frame in dpkt.pcap.Reader(f):
                udp = dpkt.ethernet.Ethernet(frame).data.data
                if isinstance(udp, dpkt.udp.UDP) and udp.dport == 67:
                    return bytes(udp.data)
    options = Options(
        [
            rfc2132.MESSAGE_TYPE.item(MessageType.DHCPDISCOVER),
            rfc2132.CLIENT_IDENTIFIER.item(rfc2132.ClientIdentifier(1, bytes.fromhex("020000770032"))),
            rfc2132.MAXIMUM_MESSAGE_SIZE.item(1472),
            rfc2132.VENDOR_CLASS_IDENTIFIER.item(b"dhcpcd-9.4.1:Linux-6.1.0:x86_64:GenuineIntel"),
            rfc2132.PARAMETER_REQUEST_LIST.item((1, 3, 28, 51, 54, 58, 59)),
            rfc3118.AUTHENTICATION.item(rfc3118.Authentication.delayed(1)),
        ]
    )
    return encode_message(DhcpMessage(op=BOOTREQUEST, xid=0xCCC99597, chaddr=bytes.fromhex("020000770032"), options=options))


def ack_with_peers() -> bytes:
    peers = [IPv4Address("10.77.0.0") + i for i in range(1, 101)]
    auth = rfc3118.Authentication.delayed(5, secret_id=0x1234)
    options = Options(
        [
            rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK),
            rfc2132.SERVER_IDENTIFIER.item(IPv4Address("10.77.0.1")),
            PEER_CE.item(full_sync_blocks({7: peers})[1:]),
            rfc3118.AUTHENTICATION.item(auth),
        ]
    )
    msg = DhcpMessage(
        op=BOOTREPLY, xid=0x12345678, ciaddr=IPv4Address("10.77.0.50"), chaddr=bytes.fromhex("020000770032"),
        options=options,
    )
    return rfc3118.sign(encode_message(msg, max_payload=1472), KEY)


def rate(fn: Callable[[], Any], seconds: float) -> float:
    number = max(1, int(timeit.Timer(fn).autorange()[0]))
    runs = timeit.repeat(fn, number=number, repeat=max(3, int(seconds / 0.2)))
    return number / min(runs)


def read_all(payload: bytes) -> None:
    msg = decode_message(payload)
    from options import DEFAULT_REGISTRY

    for code in msg.options:
        spec = DEFAULT_REGISTRY.get(code)
        if spec is not None:
            spec.decode(msg.options[code])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, dpkt {dpkt.__version__}")
    rows = []
    for label, payload in (("(a) DISCOVER", discover()), ("(b) ACK+auth+100 peers", ack_with_peers())):
        ours_msg = decode_message(payload)
        dpkt_msg = dpkt.dhcp.DHCP(payload)
        scapy_msg = BOOTP(payload)
        figures = {
            "decode ours": rate(lambda p=payload: decode_message(p), args.seconds),
            "decode ours + every typed value": rate(lambda p=payload: read_all(p), args.seconds),
            "decode dpkt": rate(lambda p=payload: dpkt.dhcp.DHCP(p), args.seconds),
            "decode scapy": rate(lambda p=payload: BOOTP(p), args.seconds / 2),
            "encode ours": rate(lambda m=ours_msg: encode_message(m, max_payload=1472), args.seconds),
            "encode dpkt": rate(lambda m=dpkt_msg: bytes(m), args.seconds),
            "encode scapy": rate(lambda m=scapy_msg: bytes(m), args.seconds / 2),
        }
        print(f"\n{label}: {len(payload)} bytes")
        for name, value in figures.items():
            print(f"  {name:34s} {value:12,.0f} /s")
        d = figures["decode ours"]
        print(f"  ratio decode ours/dpkt  {d / figures['decode dpkt']:6.2f}x   (target >= 2)")
        print(f"  ratio decode ours/scapy {d / figures['decode scapy']:6.2f}x   (target >= 20)")
        print(f"  ratio encode ours/dpkt  {figures['encode ours'] / figures['encode dpkt']:6.2f}x")
        rows.append(d / figures["decode dpkt"])
    print(f"\ngeometric mean decode ratio vs dpkt: {statistics.geometric_mean(rows):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
