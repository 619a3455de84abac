"""In-process throughput of the sans-IO server engine: 4-way exchanges per second, with
RFC 3118 delayed authentication off and on, no sockets and no disk.

Usage: .venv/bin/python benchmarks/server_engine.py [--clients N]

perfdhcp cannot authenticate, so this is where the cost of authentication (verifying
the client's HMAC, signing OFFER and ACK) is measured; benchmarks/server_perfdhcp.py
measures the whole server on the wire.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from ipaddress import IPv4Address, IPv4Network

from dhcp_server.actions import Received
from dhcp_server.engine import ServerEngine
from dhcp_server.model import (
    AuthPolicy,
    CeRecord,
    ClientKey,
    PoolRange,
    ServerConfig,
    SubnetConfig,
    VpnRecord,
)
from options import BOOTREQUEST, DhcpMessage, MessageType, Options, decode_message, encode_message
from options.rfc2132 import MESSAGE_TYPE, REQUESTED_IP_ADDRESS, SERVER_IDENTIFIER
from options.rfc3118 import AUTHENTICATION, Authentication, sign

SERVER = IPv4Address("10.77.0.1")
RELAY = IPv4Address("10.77.0.2")


def engine_for(policy: AuthPolicy, clients: int) -> ServerEngine:
    subnet = SubnetConfig(
        network=IPv4Network("10.0.0.0/8"),
        pools=(PoolRange(IPv4Address("10.1.0.0"), IPv4Address("10.1.255.255")),),
        lease_time=3600,
        auth=policy,
    )
    engine = ServerEngine(ServerConfig(server_id=SERVER, subnets=(subnet,)))
    if policy is not AuthPolicy.OFF:
        engine.put_vpn(VpnRecord(1, "bench"), 0)
        for i in range(clients):
            ce = CeRecord(f"ce{i}", ClientKey.from_hardware(1, mac(i)), 0x10000 + i, frozenset({1}))
            engine.put_ce(ce, key(i), 0)
    return engine


def mac(i: int) -> bytes:
    return b"\x02" + i.to_bytes(5, "big")


def key(i: int) -> bytes:
    return b"k" * 8 + i.to_bytes(8, "big")


def message(i: int, kind: MessageType, auth: bool, requested: IPv4Address | None = None) -> bytes:
    items = [MESSAGE_TYPE.item(kind)]
    if requested is not None:
        items += [REQUESTED_IP_ADDRESS.item(requested), SERVER_IDENTIFIER.item(SERVER)]
    if auth:
        value = Authentication.delayed(2 if requested else 1, None if requested is None else 0x10000 + i)
        items.append(AUTHENTICATION.item(value))
    msg = DhcpMessage(op=BOOTREQUEST, xid=i, hops=1, giaddr=RELAY, chaddr=mac(i), options=Options(items))
    payload = encode_message(msg)
    return sign(payload, key(i)) if auth and requested is not None else payload


def run(policy: AuthPolicy, clients: int, profile: bool) -> float:
    engine = engine_for(policy, clients)
    auth = policy is not AuthPolicy.OFF
    discovers = [message(i, MessageType.DHCPDISCOVER, auth) for i in range(clients)]
    profiler = cProfile.Profile() if profile else None
    now = 1_800_000_000.0
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for i, payload in enumerate(discovers):
        offer = engine.handle(Received(payload, RELAY, 67), now).replies[0].payload
        yiaddr = decode_message(offer).yiaddr
        request = message(i, MessageType.DHCPREQUEST, auth, yiaddr)  # the client's own work, timed below
        engine.handle(Received(request, RELAY, 67), now)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)
    elapsed = time.perf_counter() - start
    # Take out the client-side work (building and signing REQUESTs, reading OFFERs).
    client_start = time.perf_counter()
    for i in range(clients):
        decode_message(discovers[i])
        message(i, MessageType.DHCPREQUEST, auth, IPv4Address("10.1.0.1"))
    client = time.perf_counter() - client_start
    assert engine.counters["sent:DHCPACK"] == clients, engine.counters
    return clients / (elapsed - client)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="print where the time goes (auth on)")
    args = parser.parse_args()
    off = run(AuthPolicy.OFF, args.clients, False)
    on = run(AuthPolicy.REQUIRED, args.clients, args.profile)
    print(f"engine, auth off: {off:10,.0f} exchanges/s")
    print(f"engine, auth on:  {on:10,.0f} exchanges/s  ({on / off:.2f} of auth off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
