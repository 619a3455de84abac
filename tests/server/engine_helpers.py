"""A scripted DHCP client for engine tests: builds the messages a CE would send."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from dhcp_server.actions import Outcome, Received, Reply
from dhcp_server.engine import ServerEngine
from dhcp_server.model import AuthPolicy, ClientKey, PoolRange, ServerConfig, SubnetConfig
from options import BOOTREQUEST, DhcpMessage, MessageType, Options, decode_message, encode_message
from options.registry import OptionRegistry
from options.rfc2132 import MESSAGE_TYPE, REQUESTED_IP_ADDRESS, SERVER_IDENTIFIER
from options.rfc3118 import AUTHENTICATION, Authentication, sign
from options.rfc6704 import FORCERENEW_NONCE_CAPABLE
from options.vpn import registry_with_vpn_codes

SERVER_ID = IPv4Address("10.77.0.1")
UNSPECIFIED = IPv4Address(0)
NETWORK = IPv4Network("10.77.0.0/24")


def config(auth: AuthPolicy = AuthPolicy.REQUIRED, **overrides: object) -> ServerConfig:
    subnet = SubnetConfig(
        network=NETWORK,
        pools=(PoolRange(IPv4Address("10.77.0.50"), IPv4Address("10.77.0.99")),),
        routers=(SERVER_ID,),
        dns_servers=(IPv4Address("10.77.0.53"),),
        lease_time=600,
        auth=auth,
        interface="eth0",
    )
    return ServerConfig(server_id=SERVER_ID, subnets=(subnet,), **overrides)  # type: ignore[arg-type]


REGISTRY: OptionRegistry = registry_with_vpn_codes(224, 225)


@dataclass
class Client:
    """One CE: its hardware address, optional RFC 3118 key, and the state a real client keeps."""

    mac: bytes
    secret_id: int | None = None
    key: bytes | None = None
    replay: int = 0
    xid: int = 0x1000
    address: IPv4Address | None = None
    nonce_capable: bool = False
    sent: list[bytes] = field(default_factory=list)

    @property
    def key_id(self) -> ClientKey:
        return ClientKey.from_hardware(1, self.mac)

    def _auth(self, with_mac: bool) -> Authentication | None:
        if self.key is None:
            return None
        self.replay += 1
        if not with_mac:
            return Authentication.delayed(self.replay)
        return Authentication.delayed(self.replay, self.secret_id)

    def message(
        self,
        message_type: MessageType,
        *,
        requested: IPv4Address | None = None,
        server_id: IPv4Address | None = None,
        ciaddr: IPv4Address | None = None,
        with_mac: bool = True,
        new_xid: bool = True,
    ) -> bytes:
        if new_xid:
            self.xid += 1
        items = [MESSAGE_TYPE.item(message_type)]
        if requested is not None:
            items.append(REQUESTED_IP_ADDRESS.item(requested))
        if server_id is not None:
            items.append(SERVER_IDENTIFIER.item(server_id))
        if self.nonce_capable:
            items.append(FORCERENEW_NONCE_CAPABLE.item((1,)))
        auth = self._auth(with_mac and message_type not in (MessageType.DHCPDISCOVER,))
        if auth is not None:
            items.append(AUTHENTICATION.item(auth))
        msg = DhcpMessage(
            op=BOOTREQUEST,
            xid=self.xid,
            chaddr=self.mac,
            ciaddr=ciaddr or IPv4Address(0),
            options=Options(items),
        )
        payload = encode_message(msg, max_payload=1472)
        if auth is not None and auth.has_mac:
            assert self.key is not None
            payload = sign(payload, self.key)
        self.sent.append(payload)
        return payload


class Harness:
    """The engine with a fake clock; replies decoded for assertions."""

    def __init__(self, engine: ServerEngine, now: float = 1_800_000_000.0) -> None:
        self.engine = engine
        self.now = now

    def send(self, payload: bytes, source: IPv4Address = UNSPECIFIED) -> Outcome:
        return self.engine.handle(Received(payload, source, 68, "eth0"), self.now)

    def replies(self, outcome: Outcome) -> list[tuple[Reply, DhcpMessage]]:
        return [(r, decode_message(r.payload, REGISTRY)) for r in outcome.replies]

    def only_reply(self, outcome: Outcome) -> tuple[Reply, DhcpMessage]:
        replies = self.replies(outcome)
        assert len(replies) == 1, f"expected one reply, got {len(replies)}: {outcome.events}"
        return replies[0]

    def bind(self, client: Client) -> DhcpMessage:
        """DISCOVER, REQUEST: the full exchange; returns the ACK."""
        _, offer = self.only_reply(self.send(client.message(MessageType.DHCPDISCOVER, with_mac=False)))
        assert offer.message_type is MessageType.DHCPOFFER
        request = client.message(
            MessageType.DHCPREQUEST, requested=offer.yiaddr, server_id=SERVER_ID, new_xid=False
        )
        _, ack = self.only_reply(self.send(request))
        assert ack.message_type is MessageType.DHCPACK, ack.options
        client.address = ack.yiaddr
        return ack
