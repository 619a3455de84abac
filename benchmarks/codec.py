"""Decode and encode rates of ce-autoconf's DHCP codec against dpkt and scapy, in one run.

Usage: .venv/bin/python benchmarks/codec.py [--rounds N]

Messages: (a) the DHCPDISCOVER dhcpcd 9.4.1 sent with delayed authentication (from
../shared/vectors when present, else one built to the same shape); (b) a DHCPACK with
delayed authentication and a Peer-CE list of 100 addresses, built and signed by us.

Contenders are timed in interleaved rounds and each keeps its best round, so a burst of
load on the machine cannot favour one of them. Figures are messages per second.
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
    DEFAULT_REGISTRY,
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
CHADDR = bytes.fromhex("020000770032")


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
            rfc2132.PARAMETER_REQUEST_LIST.item((1, 3, 28, 33, 54, 58, 59, 57)),
            rfc2132.MAXIMUM_MESSAGE_SIZE.item(1472),
            rfc2132.VENDOR_CLASS_IDENTIFIER.item(b"dhcpcd-9.4.1:Linux-6.1.0:x86_64:GenuineIntel"),
            rfc3118.AUTHENTICATION.item(rfc3118.Authentication.delayed(0)),
        ]
    )
    return encode_message(DhcpMessage(op=BOOTREQUEST, xid=0xCCC99597, chaddr=CHADDR, options=options))


def ack_with_peers() -> bytes:
    peers = [IPv4Address("10.77.0.0") + i for i in range(1, 101)]
    options = Options(
        [
            rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK),
            rfc2132.SERVER_IDENTIFIER.item(IPv4Address("10.77.0.1")),
            PEER_CE.item(full_sync_blocks({7: peers})[1:]),
            rfc3118.AUTHENTICATION.item(rfc3118.Authentication.delayed(5, secret_id=0x1234)),
        ]
    )
    msg = DhcpMessage(
        op=BOOTREPLY, xid=0x12345678, ciaddr=IPv4Address("10.77.0.50"), chaddr=CHADDR, options=options
    )
    return rfc3118.sign(encode_message(msg, max_payload=1472), KEY)


def read_every_value(payload: bytes) -> None:
    """Decode, then build the typed value of every known option: the cost of using it all."""
    msg = decode_message(payload)
    for code, value in msg.options.items():
        spec = DEFAULT_REGISTRY.get(code)
        if spec is not None:
            spec.decode(value)


def best_rates(contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    numbers = {name: max(1, int(timeit.Timer(fn).autorange()[0] / 4)) for name, fn in contenders.items()}
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, fn in contenders.items():
            best[name] = min(best[name], timeit.timeit(fn, number=numbers[name]) / numbers[name])
    return {name: 1 / seconds for name, seconds in best.items()}


def contenders_for(payload: bytes) -> dict[str, Callable[[], Any]]:
    ours = decode_message(payload)
    theirs_dpkt = dpkt.dhcp.DHCP(payload)
    theirs_scapy = BOOTP(payload)

    def encode_ours() -> bytes:
        return encode_message(ours, max_payload=1472)

    return {
        "decode ours": lambda: decode_message(payload),
        "decode ours, strict": lambda: decode_message(payload, strict=True),
        "decode ours + every typed value": lambda: read_every_value(payload),
        "decode dpkt": lambda: dpkt.dhcp.DHCP(payload),
        "decode scapy": lambda: BOOTP(payload),
        "encode ours": encode_ours,
        "encode dpkt": lambda: bytes(theirs_dpkt),
        "encode scapy": lambda: bytes(theirs_scapy),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, dpkt {dpkt.__version__}, rounds {args.rounds}")
    ratios = []
    for label, payload in (
        ("(a) DHCPDISCOVER", discover()),
        ("(b) DHCPACK + auth + 100 peers", ack_with_peers()),
    ):
        figures = best_rates(contenders_for(payload), args.rounds)
        print(f"\n{label}: {len(payload)} bytes")
        for name, value in figures.items():
            print(f"  {name:34s} {value:12,.0f} /s")
        decode = figures["decode ours"]
        ratio = decode / figures["decode dpkt"]
        ratios.append(ratio)
        print(f"  decode ours/dpkt          {ratio:6.2f}x  (target 2)")
        print(f"  decode strict/dpkt        {figures['decode ours, strict'] / figures['decode dpkt']:6.2f}x")
        print(f"  decode ours/scapy         {decode / figures['decode scapy']:6.2f}x  (target 20)")
        print(f"  encode ours/dpkt          {figures['encode ours'] / figures['encode dpkt']:6.2f}x")
    print(f"\ndecode ours/dpkt, geometric mean: {statistics.geometric_mean(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
