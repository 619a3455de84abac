"""In-memory LAN for client tests: our ClientMachine(s) and our ServerEngine on a fake clock.

Datagrams are delivered instantly; a ``tap`` may drop or rewrite server replies (hostile
tests), and ``server_up = False`` makes the server vanish (rebinding, expiry).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from dhcp_client.config import ClientConfig
from dhcp_client.events import ClientEvent
from dhcp_client.machine import ClientMachine, State, Step, Transmit
from dhcp_client.persistence import MemoryStateStore
from dhcp_server.actions import Received, Reply
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
from options import BOOTREPLY, DhcpMessage, MessageType, Options, decode_message, encode_message
from options.rfc2132 import IP_ADDRESS_LEASE_TIME, MESSAGE_TYPE, SERVER_IDENTIFIER
from options.rfc3118 import AUTHENTICATION, Authentication, sign
from options.vpn import registry_with_vpn_codes

SERVER_ID = IPv4Address("10.77.0.1")
NETWORK = IPv4Network("10.77.0.0/24")
ZERO = IPv4Address(0)
BROADCAST = IPv4Address("255.255.255.255")
T0 = 1_800_000_000.0
REGISTRY = registry_with_vpn_codes(224, 225)
VPN_SERVER = IPv4Address("192.0.2.10")


def mac(n: int) -> bytes:
    return bytes.fromhex(f"0200000000{n:02x}")


def key(n: int) -> bytes:
    return f"ce{n}-secret-key-{n:04d}".encode()


def secret_id(n: int) -> int:
    return 0x1000 + n


def server_config(auth: AuthPolicy = AuthPolicy.REQUIRED, lease_time: int = 600) -> ServerConfig:
    subnet = SubnetConfig(
        network=NETWORK,
        pools=(PoolRange(IPv4Address("10.77.0.50"), IPv4Address("10.77.0.99")),),
        routers=(SERVER_ID,),
        dns_servers=(IPv4Address("10.77.0.53"),),
        lease_time=lease_time,
        auth=auth,
        interface="eth0",
    )
    return ServerConfig(server_id=SERVER_ID, subnets=(subnet,))


def server(auth: AuthPolicy = AuthPolicy.REQUIRED, lease_time: int = 600) -> ServerEngine:
    counter = itertools.count(1)
    return ServerEngine(
        server_config(auth, lease_time), random_bytes=lambda n: next(counter).to_bytes(n, "big")
    )


def client_config(n: int, *, keyed: bool = True, **overrides: object) -> ClientConfig:
    if keyed:
        overrides = {"secret_id": secret_id(n), "key": key(n), **overrides}
    return ClientConfig(hardware_address=mac(n), **overrides)  # type: ignore[arg-type]


def provision(
    engine: ServerEngine,
    members: dict[int, frozenset[int]],
    *,
    keyed: bool = True,
    vpn_auth: AuthPolicy = AuthPolicy.REQUIRED,
    now: float = 0.0,
) -> None:
    """``members``: CE number -> VPN IDs. Every VPN gets VPN_SERVER."""
    for vpn_id in sorted(set().union(*members.values())):
        engine.put_vpn(VpnRecord(vpn_id, f"vpn{vpn_id}", vpn_servers=(VPN_SERVER,), auth=vpn_auth), now)
    for n, vpns in members.items():
        engine.put_ce(
            CeRecord(
                f"ce{n}",
                ClientKey.from_hardware(1, mac(n)),
                secret_id(n) if keyed else None,
                frozenset(vpns),
            ),
            key(n) if keyed else None,
            now,
        )


@dataclass
class Node:
    machine: ClientMachine
    store: MemoryStateStore
    events: list[ClientEvent] = field(default_factory=list)
    sent: list[Transmit] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def of_type(self, kind: type) -> list[ClientEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def state(self) -> State:
        """A call, not an attribute, so that mypy does not narrow it across inputs."""
        return self.machine.state

    @property
    def ip(self) -> IPv4Address:
        """The bound address (the test fails if there is none)."""
        assert self.address is not None, f"not bound: {self.machine.state}"
        return self.address

    @property
    def address(self) -> IPv4Address | None:
        lease = self.machine.lease
        if lease is None or self.machine.state not in (State.BOUND, State.RENEWING, State.REBINDING):
            return None
        return lease.address


Tap = Callable[[Reply], list[Reply]]


class Lan:
    """One server and any number of clients on one link, on a fake clock."""

    def __init__(self, engine: ServerEngine, now: float = T0) -> None:
        self.server = engine
        self.now = now
        self.nodes: dict[bytes, Node] = {}
        self.server_up = True
        self.tap: Tap | None = None
        self.to_server: list[tuple[Received, DhcpMessage]] = []
        self._queue: deque[tuple[Node, Step]] = deque()

    def add(self, config: ClientConfig, store: MemoryStateStore | None = None, seed: int = 1) -> Node:
        store = store or MemoryStateStore()
        node = Node(ClientMachine(config, store, random.Random(seed)), store)
        self.nodes[config.hardware_address] = node
        return node

    def start(self, node: Node) -> None:
        self._process(node, node.machine.start(self.now))

    def feed(self, node: Node, payload: bytes, source: IPv4Address = SERVER_ID) -> Step:
        """Hand one datagram to one client (a hostile injection); its output is processed."""
        step = node.machine.receive_datagram(payload, source, self.now)
        self._process(node, step)
        return step

    def _process(self, node: Node, step: Step) -> None:
        self._queue.append((node, step))
        while self._queue:
            current, todo = self._queue.popleft()
            current.events.extend(todo.events)
            for transmit in todo.send:
                current.sent.append(transmit)
                self._to_server(current, transmit)

    def _to_server(self, node: Node, transmit: Transmit) -> None:
        if not self.server_up:
            return
        source = node.address or ZERO
        received = Received(transmit.payload, source, 68, "eth0")
        self.to_server.append((received, decode_message(transmit.payload, REGISTRY)))
        self._deliver(self.server.handle(received, self.now).replies)

    def _deliver(self, replies: list[Reply]) -> None:
        if not self.server_up:
            return
        for original in replies:
            for reply in self.tap(original) if self.tap is not None else [original]:
                for node in self.nodes.values():
                    if (
                        reply.destination == BROADCAST
                        or reply.destination == node.address
                        or (
                            reply.hardware is not None
                            and reply.hardware == node.machine.config.hardware_address
                        )
                    ):
                        pass
                    else:
                        continue
                    node.received.append(reply.payload)
                    self._queue.append(
                        (node, node.machine.receive_datagram(reply.payload, SERVER_ID, self.now))
                    )

    def next_timer(self) -> float:
        times = [n.machine.get_timer() for n in self.nodes.values()]
        if self.server_up:
            times.append(self.server.next_timer())
        return min((t for t in times if t is not None), default=math.inf)

    def run(self, until: float) -> None:
        """Advance the clock to ``until``, firing every timer on the way, in order."""
        while True:
            due = self.next_timer()
            if due > until:
                break
            self.now = max(self.now, due)
            for node in list(self.nodes.values()):
                t = node.machine.get_timer()
                if t is not None and t <= self.now:
                    self._process(node, node.machine.handle_timer(self.now))
            t = self.server.next_timer() if self.server_up else None
            if t is not None and t <= self.now:
                self._deliver(self.server.on_timer(self.now).replies)
                self._process_queue()
        self.now = max(self.now, until)

    def _process_queue(self) -> None:
        while self._queue:
            node, step = self._queue.popleft()
            self._process(node, step)

    def advance(self, seconds: float) -> None:
        self.run(self.now + seconds)


def forge(
    message_type: MessageType,
    *,
    xid: int,
    chaddr: bytes,
    yiaddr: IPv4Address = ZERO,
    ciaddr: IPv4Address = ZERO,
    extra: Sequence[tuple[int, bytes]] = (),
    auth: Authentication | None = None,
    sign_key: bytes | None = None,
    lease_time: int | None = 600,
) -> bytes:
    """A server message built by hand (a hostile or replaying server), optionally signed."""
    items: list[tuple[int, bytes]] = [MESSAGE_TYPE.item(message_type), SERVER_IDENTIFIER.item(SERVER_ID)]
    if lease_time is not None and message_type in (MessageType.DHCPOFFER, MessageType.DHCPACK):
        items.append(IP_ADDRESS_LEASE_TIME.item(lease_time))
    items.extend(extra)
    if auth is not None:
        items.append(AUTHENTICATION.item(auth))
    msg = DhcpMessage(
        op=BOOTREPLY,
        xid=xid,
        chaddr=chaddr,
        yiaddr=yiaddr,
        ciaddr=ciaddr,
        options=Options(items),
    )
    payload = encode_message(msg, max_payload=65000)
    if sign_key is not None:
        payload = sign(payload, sign_key)
    return payload


def resign(payload: bytes, sign_key: bytes, *, xid: int | None = None) -> bytes:
    """A captured message with another xid, MAC recomputed: a replay by someone with the key."""
    if xid is not None:
        payload = payload[:4] + xid.to_bytes(4, "big") + payload[8:]
    return sign(payload, sign_key)
