"""Property tests of the server engine: random clients sending random message sequences,
honest and hostile, on a fake clock.

Invariants after every step: the engine never raises; no address is ACKed to a client
while another client's ACKed lease on it is still running; every ACKed address lies in
a pool; a message whose authentication fails gets no answer and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from engine_helpers import SERVER_ID, Client, Harness, config
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dhcp_server.engine import ServerEngine
from dhcp_server.model import AuthPolicy, CeRecord, VpnRecord
from options import MessageType, decode_message

POOL = (IPv4Address("10.77.0.50"), IPv4Address("10.77.0.99"))

ACTIONS = (
    "discover",
    "select",
    "renew",
    "reboot",
    "inform",
    "release",
    "decline",
    "tamper",
    "replay",
    "wait",
    "junk",
)


@dataclass
class Live:
    client: int
    expires: float


step = st.tuples(
    st.integers(0, 5),  # which client
    st.sampled_from(ACTIONS),
    st.integers(0, 120),  # an address index into 10.77.0.40..160, for requests that name one
    st.floats(0, 2000, allow_nan=False),  # time to wait
)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(list(AuthPolicy)),
    steps=st.lists(step, min_size=5, max_size=60),
)
def test_random_sequences_keep_the_server_invariants(
    policy: AuthPolicy, steps: list[tuple[int, str, int, float]]
) -> None:
    h = Harness(ServerEngine(config(policy, offer_hold=30.0)))
    h.engine.put_vpn(VpnRecord(7, "v"), 0)
    clients = []
    for i in range(6):
        keyed = i % 2 == 0
        c = Client(
            mac=bytes((2, 0, 0, 0, 0, i)),
            secret_id=0x2000 + i if keyed else None,
            key=f"key-{i}".encode() if keyed else None,
        )
        if keyed:
            h.engine.put_ce(CeRecord(f"ce{i}", c.key_id, c.secret_id, frozenset({7})), c.key, 0)
        clients.append(c)
    offers: dict[int, IPv4Address] = {}
    live: dict[IPv4Address, Live] = {}

    for who, chosen, index, wait in steps:
        action = chosen
        c = clients[who]
        named = IPv4Address(int(IPv4Address("10.77.0.40")) + index)
        payload: bytes
        hostile = False
        if action == "wait":
            h.now += wait
            h.engine.on_timer(h.now)
            continue
        if action == "bind":  # a whole DISCOVER then REQUEST, so most sequences hold leases
            offered = h.send(c.message(MessageType.DHCPDISCOVER, with_mac=False)).replies
            if offered:
                offers[who] = decode_message(offered[0].payload).yiaddr
            action = "select"
        if action == "discover":
            payload = c.message(MessageType.DHCPDISCOVER, with_mac=False)
        elif action == "select":
            payload = c.message(
                MessageType.DHCPREQUEST, requested=offers.get(who, named), server_id=SERVER_ID, new_xid=False
            )
        elif action == "renew":
            payload = c.message(MessageType.DHCPREQUEST, ciaddr=c.address or named)
        elif action == "reboot":
            payload = c.message(MessageType.DHCPREQUEST, requested=c.address or named)
        elif action == "inform":
            payload = c.message(MessageType.DHCPINFORM, ciaddr=c.address or named)
        elif action == "release":
            payload = c.message(MessageType.DHCPRELEASE, ciaddr=c.address or named, server_id=SERVER_ID)
        elif action == "decline":
            payload = c.message(MessageType.DHCPDECLINE, requested=c.address or named, server_id=SERVER_ID)
        elif action == "tamper":
            if c.key is None:
                continue
            good = c.message(MessageType.DHCPREQUEST, ciaddr=c.address or named)
            c.sent.pop()  # never delivered: a later "replay" must not pick it
            payload = good[:-40] + bytes((good[-40] ^ 0x01,)) + good[-39:]  # covered by the MAC
            hostile = policy is not AuthPolicy.OFF  # with authentication off, option 90 means nothing
        elif action == "replay":
            if c.key is None or not c.sent:
                continue
            payload = c.sent[-1]
            repeated = decode_message(payload).message_type
            hostile = policy is not AuthPolicy.OFF and repeated is not MessageType.DHCPDISCOVER
        else:
            payload = bytes(index) + b"\x63\x82\x53\x63"
            hostile = True

        before = h.engine.leases.leases()
        out = h.send(payload, source=c.address or IPv4Address(0))  # must not raise

        if hostile:
            event(f"hostile {action} refused")
            assert out.replies == [], (action, out.events)
            assert out.writes == []
            assert h.engine.leases.leases() == before
            continue
        for reply in out.replies:
            msg = decode_message(reply.payload, None)
            if msg.message_type is MessageType.DHCPOFFER:
                offers[who] = msg.yiaddr
            if msg.message_type is MessageType.DHCPACK and msg.yiaddr != IPv4Address(0):
                address = msg.yiaddr
                assert POOL[0] <= address <= POOL[1], address
                holder = live.get(address)
                assert holder is None or holder.client == who or holder.expires <= h.now, (
                    f"{address} ACKed to client {who} while client {holder.client}'s lease runs"
                )
                live[address] = Live(who, h.now + 600)
                event("an address was ACKed")
                for other, lease in list(live.items()):
                    if lease.client == who and other != address:
                        del live[other]  # a client holds one binding
                c.address = address
        if action in ("release", "decline") and not out.replies:
            binding = h.engine.leases.lease_at(c.address) if c.address else None
            if binding is not None and not binding.active(h.now) and c.address in live:
                del live[c.address]
