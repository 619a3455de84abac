"""A DHCP load generator that authenticates: perfdhcp's relay-mode 4-way exchange with RFC 3118
delayed authentication.

perfdhcp cannot sign its messages, so it cannot measure a server with authentication
required. This generator plays the same role the same way (a relay agent on port 67: giaddr
set, hops 1, replies unicast to it; DISCOVERs at a fixed offered rate, a REQUEST for every
OFFER; an exchange that gets no answer within ``--drop-time`` is a drop) and, with ``--auth``,
does what an authenticating client does: its DISCOVER asks for delayed authentication, its
REQUEST carries the client's secret ID, a replay value higher than any before and the
HMAC-MD5; the MAC of every OFFER and ACK is checked with the client's key and a reply that
fails is counted, never used. It prints its result in perfdhcp's words (``Rate:``, ``drops
ratio:``, ``non unique addresses:``) so the same parser reads both.

Client ``i`` has hardware address ``02:xx:xx:xx:xx:xx`` = i, secret ID ``0x10000 + i`` and
the key :func:`client_key` derives; ``benchmarks/server_perfdhcp.py`` gives the server the
same CEs. Messages are built from one template per client with the varying fields patched
in place, so the generator's own cost per exchange stays a few microseconds of Python.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dhcp_server.engine import ServerEngine
from dhcp_server.model import CeRecord, ClientKey, ServerConfig, SubnetConfig
from dhcp_server.sqlite_store import SqliteStore
from options import BOOTREQUEST, DecodeError, DhcpMessage, MessageType, Options, encode_message
from options.rfc3118 import (
    AUTHENTICATION,
    MAC_SIZE,
    RDM_MONOTONIC,
    AuthAlgorithm,
    Authentication,
    AuthProtocol,
    compute_mac,
    locate_authentication,
)
from options.rfc3396 import scan_field

SECRET_ID_BASE = 0x10000
_PROTOCOL = AuthProtocol.DELAYED_REALM  # protocol 2 with no realm, as dhcpcd's "delayedrealm" sends
_HMAC_MD5 = AuthAlgorithm.HMAC_MD5
# Fixed offsets in the templates (options start at 240, in the order given; checked when built).
_XID = slice(4, 8)
_CHADDR = slice(28, 34)
_REQUESTED = slice(245, 249)  # option 50's value
_REPLAY = slice(260, 268)  # option 90: protocol, algorithm, RDM, replay, secret ID, MAC
_SECRET_ID = slice(268, 272)
_MAC_AT = 272


def client_mac(i: int) -> bytes:
    return b"\x02" + i.to_bytes(5, "big")


def client_key(i: int) -> bytes:
    """The benchmark CE's delayed-authentication key (deterministic: both sides derive it)."""
    return hashlib.sha256(b"ce-autoconf benchmark key" + i.to_bytes(4, "big")).digest()[:16]


def prepare_ces(path: Path, clients: int, network: IPv4Network) -> None:
    """A store holding one CE per simulated client, with its key, and no lease: what an ISP's
    database holds before its CEs boot. The server that opens it must have ``network``."""
    subnet = SubnetConfig(network=network, pools=())
    engine = ServerEngine(ServerConfig(server_id=network.network_address + 1, subnets=(subnet,)))
    writes = []
    for i in range(clients):
        ce = CeRecord(f"ce{i}", ClientKey.from_hardware(1, client_mac(i)), SECRET_ID_BASE + i, frozenset())
        writes += engine.put_ce(ce, client_key(i), 0).writes
    store = SqliteStore(path)
    try:
        store.commit(writes)
    finally:
        store.close()


def _template(kind: MessageType, relay: IPv4Address, items: dict[int, bytes]) -> bytes:
    """One client's message as the codec encodes it (chaddr and the secret ID patched per client)."""
    options = Options({53: bytes((kind,)), **items})
    msg = DhcpMessage(op=BOOTREQUEST, hops=1, giaddr=relay, chaddr=client_mac(0), options=options)
    return encode_message(msg)


def _for_client(template: bytes, i: int, *, secret_id: bool = False) -> bytes:
    payload = bytearray(template)
    payload[_CHADDR] = client_mac(i)
    if secret_id:
        payload[_SECRET_ID] = (SECRET_ID_BASE + i).to_bytes(4, "big")
    return bytes(payload)


def discover_templates(clients: int, relay: IPv4Address, auth: bool) -> list[bytes]:
    # RFC 3118 5.3: the DISCOVER asks for delayed authentication, no credentials yet.
    items = (
        {90: AUTHENTICATION.encode(Authentication(_PROTOCOL, _HMAC_MD5, RDM_MONOTONIC, 0))} if auth else {}
    )
    template = _template(MessageType.DHCPDISCOVER, relay, items)
    return [_for_client(template, i) for i in range(clients)]


def request_templates(clients: int, relay: IPv4Address, server: IPv4Address, auth: bool) -> list[bytes]:
    items = {50: bytes(4), 54: server.packed}
    if auth:  # realm (none), secret ID, MAC: filled in per client and per REQUEST
        info = (SECRET_ID_BASE).to_bytes(4, "big") + bytes(MAC_SIZE)
        items[90] = AUTHENTICATION.encode(Authentication(_PROTOCOL, _HMAC_MD5, RDM_MONOTONIC, 0, info))
    template = _template(MessageType.DHCPREQUEST, relay, items)
    if template[_REQUESTED.start - 2] != 50:
        raise RuntimeError("option 50 is not where the REQUEST is patched")
    if auth and locate_authentication(template) != (_REPLAY.start - 3, _MAC_AT + MAC_SIZE):
        raise RuntimeError("option 90 is not where the REQUEST is patched")
    return [_for_client(template, i, secret_id=auth) for i in range(clients)]


def message_type(payload: bytes) -> int:
    """Option 53 of a reply (0 if absent or the options do not parse), from the options field."""
    spans: list[tuple[int, int, int]] = []
    try:
        scan_field(payload, 240, len(payload), spans)
    except DecodeError:
        return 0
    return next((payload[start] for code, start, end in spans if code == 53 and end - start == 1), 0)


@dataclass
class Tally:
    discovers: int = 0
    offers: int = 0
    requests: int = 0
    acks: int = 0
    naks: int = 0
    late: int = 0
    bad_mac: int = 0
    non_unique: int = 0
    holders: dict[bytes, int] = field(default_factory=dict)


def run(  # noqa: PLR0917 (the command line's arguments, passed through)
    server: str, relay: str, rate: int, seconds: float, clients: int, auth: bool, drop_time: float
) -> Tally:
    discovers = discover_templates(clients, IPv4Address(relay), auth)
    requests = request_templates(clients, IPv4Address(relay), IPv4Address(server), auth)
    keys = [client_key(i) for i in range(clients)] if auth else []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((relay, 67))
    sock.setblocking(False)
    target = (server, 67)
    tally = Tally()
    # xid -> (client, time the DISCOVER or REQUEST left, phase: 1 waiting for OFFER, 3 for ACK)
    pending: dict[int, tuple[int, float, int]] = {}
    replay = time.time_ns()  # one increasing counter serves every client's replay values
    total = int(rate * seconds)
    start = time.monotonic()
    stop = start + seconds + drop_time
    sent = 0
    buffer = bytearray(2048)
    view = memoryview(buffer)
    while True:
        now = time.monotonic()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            client = sent % clients
            xid = sent + 1
            payload = discovers[client]
            sock.sendto(payload[:4] + xid.to_bytes(4, "big") + payload[8:], target)
            pending[xid] = (client, now, 1)
            sent += 1
        tally.discovers = sent
        if now >= stop:
            break
        while True:
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                break
            reply = bytes(view[:size])
            xid = int.from_bytes(reply[_XID], "big")
            entry = pending.get(xid)
            if entry is None:
                continue
            client, sent_at, phase = entry
            if time.monotonic() - sent_at > drop_time:
                tally.late += 1
                del pending[xid]
                continue
            kind = message_type(reply)
            if auth:
                try:
                    _, end = locate_authentication(reply)
                except ValueError:
                    end = 0
                mac = reply[end - 16 : end] if end else b""
                if not end or not hmac.compare_digest(mac, compute_mac(reply, keys[client], end - 16)):
                    tally.bad_mac += 1
                    continue
            if phase == 1 and kind == 2:
                tally.offers += 1
                replay += 1
                request = bytearray(requests[client])
                request[_XID] = reply[_XID]
                request[_REQUESTED] = reply[16:20]
                if auth:
                    request[_REPLAY] = replay.to_bytes(8, "big")
                    request[_MAC_AT : _MAC_AT + 16] = compute_mac(bytes(request), keys[client], _MAC_AT)
                sock.sendto(request, target)
                tally.requests += 1
                pending[xid] = (client, time.monotonic(), 3)
            elif phase == 3 and kind == 5:
                tally.acks += 1
                del pending[xid]
                address = reply[16:20]
                holder = tally.holders.get(address)
                if holder is not None and holder != client:
                    tally.non_unique += 1
                tally.holders[address] = client
            elif phase == 3 and kind == 6:
                tally.naks += 1
                del pending[xid]
        select.select([sock], [], [], 0.0005 if sent < total else 0.01)
    sock.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("server")
    parser.add_argument("--relay", required=True, help="our address: giaddr, bound on port 67")
    parser.add_argument("--rate", type=int, required=True, help="4-way exchanges offered per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50000)
    parser.add_argument("--auth", action="store_true", help="RFC 3118 delayed authentication")
    parser.add_argument("--drop-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    t = run(args.server, args.relay, args.rate, args.seconds, args.clients, args.auth, args.drop_time)
    do_drops = 100.0 * (t.discovers - t.offers) / t.discovers if t.discovers else 100.0
    ra_drops = 100.0 * (t.requests - t.acks) / t.requests if t.requests else 100.0
    print(
        f"sent: {t.discovers}/{t.requests}; received: {t.offers}/{t.acks}; "
        f"NAKs (counted as drops): {t.naks}; late: {t.late}"
    )
    print(f"Rate: {t.acks / args.seconds:.2f} 4-way exchanges/second, expected rate: {args.rate}")
    print(f"DISCOVER-OFFER drops ratio: {do_drops:.4f} %")
    print(f"REQUEST-ACK drops ratio: {ra_drops:.4f} %")
    print(f"replies failing authentication: {t.bad_mac}")
    print(f"non unique addresses: {t.non_unique}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
