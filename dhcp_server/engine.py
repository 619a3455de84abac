"""The sans-IO DHCP server: datagrams, management requests and time in; replies, store
writes and log events out.

RFC 2131 section 4.3 server behaviour, RFC 3118 delayed authentication on every client
message (:mod:`dhcp_server.auth`), VPN data in answer to DHCPINFORM (draft-lee appendix
3), FORCERENEW to the other members of a VPN whose membership changed (RFC 3203,
authenticated by RFC 3118 or the RFC 6704 nonce), and draft-lee section 6 quarantine.

Each input is handled in two phases: everything the server needs is read from the
message first (a malformed value raises :class:`DecodeError` there and the message is
counted and dropped with no state touched), then the decision changes state.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import ClassVar, NamedTuple

from dhcp_server.actions import CeilingWrite, Event, LeaseWrite, Outcome, Received, ReplayWrite, Reply
from dhcp_server.auth import AuthVerdict, Credentials, check_request, sign_reply
from dhcp_server.directory import Directory
from dhcp_server.forcerenew import ForcerenewQueue, Pending
from dhcp_server.leases import LeaseTable
from dhcp_server.model import (
    AuthPolicy,
    CeRecord,
    ClientKey,
    Lease,
    LeaseState,
    ServerConfig,
    SubnetConfig,
    VpnRecord,
)
from dhcp_server.quarantine import Admission, Quarantine
from dhcp_server.reply_wire import encode_lease_reply, option_tlvs
from dhcp_server.store import Snapshot
from options import (
    BOOTREQUEST,
    DecodeError,
    DhcpMessage,
    EncodeError,
    MessageType,
    Options,
    decode_message,
    encode_message,
    max_payload_for,
)
from options.message import FLAG_BROADCAST
from options.registry import OptionRegistry
from options.replay import ReplayCounter
from options.rfc2132 import (
    CLIENT_IDENTIFIER,
    DOMAIN_NAME,
    DOMAIN_NAME_SERVER,
    HOST_NAME,
    IP_ADDRESS_LEASE_TIME,
    MESSAGE,
    MESSAGE_TYPE,
    REBINDING_TIME,
    RENEWAL_TIME,
    REQUESTED_IP_ADDRESS,
    ROUTER,
    SERVER_IDENTIFIER,
    SUBNET_MASK,
)
from options.rfc3046 import RELAY_AGENT_INFORMATION
from options.rfc3118 import AUTHENTICATION, Authentication, sign
from options.rfc3203 import build_forcerenew
from options.rfc3396 import instances, scan_field
from options.rfc6704 import FORCERENEW_NONCE_CAPABLE, NONCE_SIZE, forcerenew_hmac, reconfigure_nonce
from options.vpn import full_sync_blocks, registry_with_vpn_codes, vpn_specs

__all__ = ["ServerEngine"]

_ZERO = IPv4Address(0)
#: Counter names by message type, built once: this is on every message's path.
_RECEIVED = {t: f"received:{t.name}" for t in MessageType}
_SENT = {t: f"sent:{t.name}" for t in MessageType}
_BROADCAST = IPv4Address("255.255.255.255")
CLIENT_PORT = 68
SERVER_PORT = 67
#: How often held offers are swept (they also expire lazily when looked at).
_OFFER_SWEEP = 30.0


class _Request(NamedTuple):
    """Everything the server reads from a client message, read before anything changes.

    A NamedTuple: built once per message, and a tuple is several times cheaper to build
    than a frozen dataclass.
    """

    msg: DhcpMessage
    type: MessageType
    client: ClientKey
    ciaddr: IPv4Address  # read once: each read of msg.ciaddr builds an IPv4Address
    giaddr: IPv4Address
    requested: IPv4Address | None
    server_id: IPv4Address | None
    hostname: str | None
    auth: Authentication | None
    relay_info: bytes | None  # option 82 exactly as received, echoed verbatim (RFC 3046 2.2)
    link_selection: IPv4Address | None
    nonce_capable: bool
    max_payload: int


class _Context(NamedTuple):
    """One client message being handled: what every handler needs, passed as one value."""

    request: _Request
    subnet: SubnetConfig
    verdict: AuthVerdict
    received: Received
    now: float
    out: Outcome


@dataclass(slots=True)
class _Dirty:
    """A VPN whose peer lists changed and whose members are still to be told."""

    reason: str
    last_change: int  # the change counter at the latest change (orders changes and INFORMs exactly)
    due: float


class _CapturedCeiling:
    """The replay counter's ceiling store: saves become store writes of the same outcome."""

    __slots__ = ("pending", "value")

    def __init__(self, value: int) -> None:
        self.value = value
        self.pending: int | None = None

    def load(self) -> int:
        return self.value

    def save(self, ceiling: int) -> None:
        self.value = ceiling
        self.pending = ceiling


class ServerEngine:
    """The server's state and rules. Not thread-safe: one driver feeds it."""

    def __init__(
        self,
        config: ServerConfig,
        snapshot: Snapshot | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        snapshot = snapshot or Snapshot()
        self.config = config
        self._random_bytes = random_bytes
        self.peer_ce, self.vpn_servers = vpn_specs(config.peer_ce_code, config.vpn_server_code)
        self.registry: OptionRegistry = registry_with_vpn_codes(config.peer_ce_code, config.vpn_server_code)
        self.leases = LeaseTable(config, snapshot.leases.values())
        self.directory = Directory(snapshot.vpns.values(), snapshot.ces.values(), snapshot.secrets)
        self._replay_seen: dict[ClientKey, int] = dict(snapshot.replay)
        self._ceiling = _CapturedCeiling(snapshot.ceiling)
        self._replay = ReplayCounter(self._ceiling)
        self.quarantine = Quarantine(config.quarantine)
        self.forcerenews = ForcerenewQueue(config.forcerenew_first_retry, config.forcerenew_max_attempts)
        self.counters: Counter[str] = Counter()
        self._by_interface = {s.interface: s for s in config.subnets if s.interface is not None}
        self._next_sweep = 0.0
        self._dirty: dict[int, _Dirty] = {}
        self._lease_payloads = {s.network: self._subnet_payloads(s, lease=True) for s in config.subnets}
        self._lease_blocks = {
            network: {
                kind: b"".join(
                    option_tlvs(code, value) for code, value in {53: bytes((kind,)), **items}.items()
                )
                for kind in (MessageType.DHCPOFFER, MessageType.DHCPACK)
            }
            for network, items in self._lease_payloads.items()
        }
        self._inform_payloads = {s.network: self._subnet_payloads(s, lease=False) for s in config.subnets}
        self._changes = 0  # counts VPN changes; an INFORM records the count it saw
        self._informed_at: dict[ClientKey, int] = {}

    # == datagrams ====================================================================

    def handle(self, received: Received, now: float) -> Outcome:
        """One datagram from port 67's socket."""
        out = Outcome()
        try:
            request = self._read(received.payload)
        except DecodeError as exc:
            return self._drop(out, "malformed", source=received.source, reason=exc.reason, offset=exc.offset)
        if request is None:
            return self._drop(out, "not_a_dhcp_request", source=received.source)
        self.counters[_RECEIVED[request.type]] += 1
        admission = self.quarantine.admit(request.client, now)
        if admission is not Admission.ADMITTED:
            if admission is Admission.QUARANTINED_NOW:
                out.events.append(Event("client.quarantined", (("client", request.client),)))
                self.counters["quarantine:started"] += 1
            self.counters["dropped:rate_limited"] += 1
            return out
        subnet = self._subnet_for(request, received)
        if subnet is None:
            return self._drop(out, "no_subnet", client=request.client, source=received.source)
        verdict = check_request(
            request.msg,
            message_type=request.type,
            client=request.client,
            auth=request.auth,
            policy=subnet.auth,
            directory=self.directory,
            last_replay=self._replay_seen.get(request.client),
            realm=self.config.auth_realm,
        )
        if verdict.drop is not None:
            return self._drop(out, verdict.drop, client=request.client, type=request.type.name)
        if verdict.replay is not None:
            self._replay_seen[request.client] = verdict.replay
            out.writes.append(ReplayWrite(request.client, verdict.replay))
        handler = self._handlers.get(request.type)
        if handler is None:
            return self._drop(out, "unexpected_type", client=request.client, type=request.type.name)
        handler(self, _Context(request, subnet, verdict, received, now, out))
        if out.writes:
            out.replies[:] = [r.made_durable() for r in out.replies]
        return out

    def _read(self, payload: bytes) -> _Request | None:
        msg = decode_message(payload, self.registry)
        message_type = msg.message_type
        if msg.op != BOOTREQUEST or message_type is None:
            return None
        options = msg.options
        client_id = options.get(61)
        if client_id is not None:
            CLIENT_IDENTIFIER.validate(client_id)  # RFC 2132 9.14: a type and at least one octet
            client = ClientKey.from_client_id(client_id)
        else:
            client = ClientKey.from_hardware(msg.htype, msg.hardware_address)
        relay = options.get_value(RELAY_AGENT_INFORMATION)
        nonce_algorithms = options.get_value(FORCERENEW_NONCE_CAPABLE)
        return _Request(
            msg=msg,
            type=message_type,
            client=client,
            ciaddr=msg.ciaddr,
            giaddr=msg.giaddr,
            requested=options.get_value(REQUESTED_IP_ADDRESS),
            server_id=options.get_value(SERVER_IDENTIFIER),
            hostname=options.get_value(HOST_NAME),
            auth=options.get_value(AUTHENTICATION),
            relay_info=options.get(82),
            link_selection=relay.link_selection if relay is not None else None,
            nonce_capable=nonce_algorithms is not None and 1 in nonce_algorithms,
            max_payload=max_payload_for(msg),
        )

    def _subnet_for(self, request: _Request, received: Received) -> SubnetConfig | None:
        """RFC 2131 4.3.1 / RFC 3527: the relay's link, else the receiving interface's subnet."""
        if request.giaddr != _ZERO:
            return self.config.subnet_for(request.link_selection or request.giaddr)
        if received.interface is not None and received.interface in self._by_interface:
            return self._by_interface[received.interface]
        for address in (request.ciaddr, received.source):
            if address != _ZERO:
                subnet = self.config.subnet_for(address)
                if subnet is not None:
                    return subnet
        direct = [s for s in self.config.subnets if s.interface is None]
        return direct[0] if len(self.config.subnets) == 1 and direct else None

    def _drop(self, out: Outcome, counter: str, **fields: object) -> Outcome:
        self.counters[f"dropped:{counter}"] += 1
        out.events.append(Event("drop", (("counter", counter), *fields.items())))
        return out

    # -- RFC 2131 4.3.1 --------------------------------------------------------------

    def _discover(self, ctx: _Context) -> None:
        request, subnet, _verdict, _received, now, out = ctx
        address = self.leases.choose(subnet, request.client, request.requested, now)
        if address is None:
            self._drop(out, "pool_exhausted", client=request.client, subnet=subnet.network)
            return
        self.leases.hold_offer(address, request.client, now + self.config.offer_hold)
        # RFC 6704: the OFFER carries no option 90 unless delayed authentication is in use.
        self._lease_reply(ctx, MessageType.DHCPOFFER, address)

    # -- RFC 2131 4.3.2 --------------------------------------------------------------

    def _request(self, ctx: _Context) -> None:
        request, subnet, _verdict, _received, now, out = ctx
        client = request.client
        self.forcerenews.answered(client)
        if request.server_id is not None:  # SELECTING
            if request.server_id != self.config.server_id:
                self.leases.drop_offer(client)
                self.counters["request:other_server"] += 1
                return
            if request.requested is None or request.ciaddr != _ZERO:
                self._drop(out, "malformed_request", client=client)
                return
            wanted = request.requested
            acceptable = self.leases.offered_to(client, now) == wanted or self._may_bind(
                subnet, wanted, client, now
            )
            if acceptable:
                self._ack_binding(ctx, wanted)
            else:
                self._nak(ctx, "requested address not available")
            return
        if request.requested is not None and request.ciaddr == _ZERO:  # INIT-REBOOT
            wanted = request.requested
            if wanted not in subnet.network:
                self._nak(ctx, "wrong network")
                return
            known = self.leases.lease_of(client)
            if known is None:
                self.counters["request:unknown_client"] += 1  # "MUST remain silent"
                return
            if known.address != wanted or not self._may_bind(subnet, wanted, client, now):
                self._nak(ctx, "address not yours")
                return
            self._ack_binding(ctx, wanted)
            return
        if request.ciaddr != _ZERO:  # RENEWING or REBINDING
            known = self.leases.lease_of(client)
            if known is None or known.address != request.ciaddr:
                if self.config.subnet_for(request.ciaddr) is None:
                    self.counters["request:not_ours"] += 1
                    return
                self._nak(ctx, "no binding for this address")
                return
            if not self._may_bind(subnet, request.ciaddr, client, now):
                self._nak(ctx, "address no longer available")
                return
            self._ack_binding(ctx, request.ciaddr)
            return
        self._drop(out, "malformed_request", client=client)

    def _may_bind(self, subnet: SubnetConfig, address: IPv4Address, client: ClientKey, now: float) -> bool:
        if not self.leases.free_for(int(address), client, now):
            return False
        return self.leases.in_pool(subnet, address) or any(
            r.address == address and r.client == client for r in subnet.reservations
        )

    def _ack_binding(self, ctx: _Context, address: IPv4Address) -> None:
        request, subnet, verdict, _received, now, out = ctx
        client = request.client
        previous = self.leases.active_lease_of(client, now)
        nonce = None
        if verdict.sign_with is None and request.nonce_capable:
            nonce = self._random_bytes(NONCE_SIZE)
        lease = Lease(
            address=address,
            client=client,
            chaddr=request.msg.hardware_address,  # FORCERENEW takes hlen from its length
            expires=now + subnet.lease_time,
            xid=request.msg.xid,
            hostname=request.hostname,
            nonce=nonce if nonce is not None else (previous.nonce if previous is not None else None),
            updated=now,
        )
        self.leases.bind(lease)
        out.writes.append(LeaseWrite(lease))
        self.counters["lease:bound"] += 1
        out.events.append(
            Event(
                "lease.bound",
                (("address", address), ("client", client), ("expires", lease.expires)),
            )
        )
        self._lease_reply(ctx, MessageType.DHCPACK, address, nonce)
        if previous is None or previous.address != address:
            ce = verdict.ce or self.directory.ce_by_client(client)
            if ce is not None:
                self._vpn_changed(ce.vpns, f"CE {ce.name} now at {address}", now, out)

    def _nak(self, ctx: _Context, why: str) -> None:
        """A DHCPNAK, signed like any other reply: an authenticating client drops unsigned ones."""
        request, _subnet, verdict, received, now, out = ctx
        options = Options(
            [
                MESSAGE_TYPE.item(MessageType.DHCPNAK),
                SERVER_IDENTIFIER.item(self.config.server_id),
                MESSAGE.item(why),
            ]
        )
        credentials = verdict.sign_with
        if credentials is not None:
            options = options.with_payload(90, credentials.payload(self._next_replay(now, out)))
        self.counters["sent:DHCPNAK"] += 1
        self._send(
            request, options, _ZERO, received=received, out=out, credentials=credentials, broadcast_nak=True
        )

    # -- RFC 2131 4.3.3, 4.3.4 -----------------------------------------------------------

    def _decline(self, ctx: _Context) -> None:
        request, _subnet, _verdict, _received, now, out = ctx
        if request.server_id != self.config.server_id or request.requested is None:
            return
        lease = self.leases.lease_at(request.requested)
        if lease is None or lease.client != request.client:
            return
        declined = replace(lease, state=LeaseState.DECLINED, expires=now, updated=now)
        self.leases.decline(declined, now + self.config.decline_hold)
        out.writes.append(LeaseWrite(declined))
        out.events.append(Event("lease.declined", (("address", lease.address), ("client", request.client))))

    def _release(self, ctx: _Context) -> None:
        request, _subnet, verdict, _received, now, out = ctx
        lease = self.leases.lease_of(request.client)
        if lease is None or lease.address != request.ciaddr or not lease.active(now):
            return
        released = replace(lease, state=LeaseState.RELEASED, expires=now, updated=now)
        self.leases.bind(released)
        out.writes.append(LeaseWrite(released))
        out.events.append(Event("lease.released", (("address", lease.address), ("client", request.client))))
        ce = verdict.ce or self.directory.ce_by_client(request.client)
        if ce is not None:
            self._vpn_changed(ce.vpns, f"CE {ce.name} released {lease.address}", now, out)

    # -- RFC 2131 4.3.5 and draft-lee appendix 3 -------------------------------------------

    def _inform(self, ctx: _Context) -> None:
        request, subnet, verdict, received, now, out = ctx
        self.forcerenews.answered(request.client)
        lease = self.leases.active_lease_of(request.client, now)
        if lease is not None and lease.xid != request.msg.xid:
            # dhcpcd takes a FORCERENEW only with the xid of its latest transaction.
            lease = replace(lease, xid=request.msg.xid, updated=now)
            self.leases.bind(lease)
            out.writes.append(LeaseWrite(lease))
        options = self._inform_options(subnet)
        ce = verdict.ce or self.directory.ce_by_client(request.client)
        if ce is not None and self._may_see_vpn_data(ce, verdict):
            peers = self.directory.peers_of(ce, lambda c: self._address_of(c, now))
            if peers:
                options = options.with_value(self.peer_ce, full_sync_blocks(peers))
            vpns = [vpn for vpn in map(self.directory.vpn, sorted(ce.vpns)) if vpn is not None]
            servers = tuple(dict.fromkeys(s for vpn in vpns for s in vpn.vpn_servers))
            if servers:
                options = options.with_value(self.vpn_servers, servers)
            self.counters["inform:vpn_data"] += 1
            self._informed_at[request.client] = self._changes
        self._reply(request, options, yiaddr=_ZERO, verdict=verdict, received=received, now=now, out=out)

    def _may_see_vpn_data(self, ce: CeRecord, verdict: AuthVerdict) -> bool:
        """Peer lists go only to a CE that proved who it is, unless every VPN of it waives that."""
        if verdict.authenticated:
            return True
        vpns = [vpn for vpn in map(self.directory.vpn, ce.vpns) if vpn is not None]
        return bool(vpns) and all(v.auth is AuthPolicy.OFF for v in vpns)

    def _address_of(self, ce: CeRecord, now: float) -> IPv4Address | None:
        if ce.static_address is not None:
            return ce.static_address
        if ce.client is None:
            return None
        lease = self.leases.active_lease_of(ce.client, now)
        return lease.address if lease is not None else None

    # -- replies -------------------------------------------------------------------------

    def _lease_reply(
        self, ctx: _Context, message_type: MessageType, yiaddr: IPv4Address, nonce: bytes | None = None
    ) -> None:
        """An OFFER or ACK, built by :func:`encode_lease_reply` from the subnet's encoded options;
        the general path (:meth:`_reply`) for what that does not cover (an RFC 6704 nonce, a
        reply that needs overload)."""
        request, subnet, verdict, received, now, out = ctx
        credentials = verdict.sign_with
        if nonce is None:
            block = self._lease_blocks[subnet.network][message_type]
            key = None
            if credentials is not None:
                block += option_tlvs(90, credentials.payload(self._next_replay(now, out)))
                key = credentials.key
            msg = request.msg
            ciaddr = request.ciaddr if request.type is not MessageType.DHCPDISCOVER else _ZERO
            payload = encode_lease_reply(
                msg.wire,
                block,
                int(yiaddr),
                int(ciaddr),
                msg.flags,
                request.max_payload,
                key,
                request.relay_info,
            )
            if payload is not None:
                self.counters[_SENT[message_type]] += 1
                out.replies.append(self._address_reply(payload, request, yiaddr, received, nak=False))
                return
        options = self._lease_options(message_type, subnet)
        self._reply(
            request, options, yiaddr=yiaddr, verdict=verdict, received=received, now=now, out=out, nonce=nonce
        )

    def _lease_options(self, message_type: MessageType, subnet: SubnetConfig) -> Options:
        """OFFER/ACK options: the message type, then the subnet's, encoded once at start-up."""
        items = {53: bytes((message_type,))}
        items.update(self._lease_payloads[subnet.network])
        return Options(items)

    def _inform_options(self, subnet: SubnetConfig) -> Options:
        """RFC 2131 4.3.5: parameters without a lease time or address."""
        items = {53: bytes((MessageType.DHCPACK,))}
        items.update(self._inform_payloads[subnet.network])
        return Options(items)

    def _subnet_payloads(self, subnet: SubnetConfig, *, lease: bool) -> dict[int, bytes]:
        pairs = [SERVER_IDENTIFIER.item(self.config.server_id)]
        if lease:
            pairs += [
                IP_ADDRESS_LEASE_TIME.item(subnet.lease_time),
                RENEWAL_TIME.item(subnet.t1),
                REBINDING_TIME.item(subnet.t2),
            ]
        pairs.append(SUBNET_MASK.item(subnet.network.netmask))
        if subnet.routers:
            pairs.append(ROUTER.item(subnet.routers))
        if subnet.dns_servers:
            pairs.append(DOMAIN_NAME_SERVER.item(subnet.dns_servers))
        if subnet.domain_name:
            pairs.append(DOMAIN_NAME.item(subnet.domain_name))
        return dict(pairs)

    def _reply(
        self,
        request: _Request,
        options: Options,
        *,
        yiaddr: IPv4Address,
        verdict: AuthVerdict,
        received: Received,
        now: float,
        out: Outcome,
        nonce: bytes | None = None,
    ) -> None:
        credentials = verdict.sign_with
        if credentials is not None:
            options = options.with_payload(90, credentials.payload(self._next_replay(now, out)))
        elif nonce is not None:
            options = options.with_value(
                AUTHENTICATION, reconfigure_nonce(self._next_replay(now, out), nonce)
            )
        message_type = MessageType(options[53][0])
        self.counters[_SENT[message_type]] += 1
        self._send(request, options, yiaddr, received=received, out=out, credentials=credentials)

    def _send(
        self,
        request: _Request,
        options: Options,
        yiaddr: IPv4Address,
        *,
        received: Received,
        out: Outcome,
        credentials: Credentials | None,
        broadcast_nak: bool = False,
    ) -> None:
        msg = request.msg
        relayed = request.giaddr != _ZERO
        flags = msg.flags | (FLAG_BROADCAST if broadcast_nak and relayed else 0)
        reply = DhcpMessage.reply_to(
            msg,
            options,
            yiaddr=yiaddr,
            ciaddr=request.ciaddr
            if request.type is not MessageType.DHCPDISCOVER and not broadcast_nak
            else _ZERO,
            flags=flags,
        )
        try:
            payload = encode_message(reply, max_payload=request.max_payload)
        except EncodeError as exc:
            self._drop(out, "reply_too_large", client=request.client, reason=str(exc))
            return
        if credentials is not None:
            payload = sign_reply(payload, credentials)
        if request.relay_info is not None:
            payload = _append_relay_info(payload, request.relay_info)
        out.replies.append(self._address_reply(payload, request, yiaddr, received, nak=broadcast_nak))

    @staticmethod
    def _address_reply(
        payload: bytes, request: _Request, yiaddr: IPv4Address, received: Received, *, nak: bool
    ) -> Reply:
        """RFC 2131 4.1, "If the 'giaddr' field ... is nonzero ..." and the paragraphs after it."""
        if request.giaddr != _ZERO:
            return Reply(payload, request.giaddr, SERVER_PORT, received.interface)
        if nak:
            return Reply(payload, _BROADCAST, CLIENT_PORT, received.interface)
        if request.ciaddr != _ZERO:
            return Reply(payload, request.ciaddr, CLIENT_PORT, received.interface)
        if request.msg.broadcast or yiaddr == _ZERO:
            return Reply(payload, _BROADCAST, CLIENT_PORT, received.interface)
        return Reply(payload, yiaddr, CLIENT_PORT, received.interface, hardware=request.msg.hardware_address)

    def _next_replay(self, now: float, out: Outcome) -> int:
        value = self._replay.next(now)
        if self._ceiling.pending is not None:
            out.writes.append(CeilingWrite(self._ceiling.pending))
            self._ceiling.pending = None
        return value

    # == FORCERENEW (RFC 3203) ==========================================================

    def _vpn_changed(self, vpn_ids: frozenset[int], reason: str, now: float, out: Outcome) -> None:
        """Note that the peers of ``vpn_ids`` changed; their members are told after a hold-down.

        Changes within ``forcerenew_holddown`` seconds are coalesced, so a thousand CEs
        booting at once cost one pass over each VPN, not one per CE. A member that sends an
        INFORM after the last change (as a CE does right after binding) already knows and
        is not told again.
        """
        self._changes += 1
        for vpn_id in sorted(vpn_ids):
            dirty = self._dirty.get(vpn_id)
            if dirty is None:
                self._dirty[vpn_id] = _Dirty(reason, self._changes, now + self.config.forcerenew_holddown)
            else:
                dirty.last_change, dirty.reason = self._changes, reason
            out.events.append(Event("vpn.changed", (("vpn_id", vpn_id), ("reason", reason))))

    def _tell_members(self, vpn_id: int, dirty: _Dirty, now: float, out: Outcome) -> None:
        """Schedule a FORCERENEW for each member holding a lease that has not asked since the change."""
        for ce in self.directory.members(vpn_id):
            if ce.client is None or self._informed_at.get(ce.client, -1) >= dirty.last_change:
                continue
            if self.leases.active_lease_of(ce.client, now) is None:
                continue
            self.forcerenews.schedule(ce.client, dirty.reason, now)
            out.events.append(Event("forcerenew.scheduled", (("ce", ce.name), ("reason", dirty.reason))))

    def on_timer(self, now: float) -> Outcome:
        """Send the FORCERENEWs that are due; sweep stale offers."""
        out = Outcome()
        if now >= self._next_sweep:
            self.leases.expire_offers(now)
            self._next_sweep = now + _OFFER_SWEEP
        for vpn_id, dirty in list(self._dirty.items()):
            if dirty.due <= now:
                del self._dirty[vpn_id]
                self._tell_members(vpn_id, dirty, now, out)
        for pending in self.forcerenews.due(now):
            self._forcerenew(pending, now, out)
        if out.writes:
            out.replies[:] = [r.made_durable() for r in out.replies]
        return out

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` next has work (FORCERENEWs; offers expire lazily)."""
        due = [d.due for d in self._dirty.values()]
        pending = self.forcerenews.next_due()
        if pending is not None:
            due.append(pending)
        return min(due, default=None)

    def _forcerenew(self, pending: Pending, now: float, out: Outcome) -> None:
        client = pending.client
        lease = self.leases.active_lease_of(client, now)
        if lease is None:
            self.forcerenews.drop(client)
            self.counters["forcerenew:no_lease"] += 1
            return
        if self.forcerenews.exhausted(client):
            self.forcerenews.drop(client)
            self.counters["forcerenew:gave_up"] += 1
            out.events.append(Event("forcerenew.gave_up", (("client", client), ("address", lease.address))))
            return
        ce = self.directory.ce_by_client(client)
        secret_id = ce.secret_id if ce is not None else None
        key = self.directory.key(secret_id) if secret_id is not None else None
        if key is not None:
            auth = Authentication.delayed(self._next_replay(now, out), secret_id, self.config.auth_realm)
            sign_key = key
        elif lease.nonce is not None:
            auth = forcerenew_hmac(self._next_replay(now, out))
            sign_key = lease.nonce
        else:
            # RFC 3203 section 6: never an unauthenticated FORCERENEW.
            self.forcerenews.drop(client)
            self.counters["forcerenew:cannot_authenticate"] += 1
            out.events.append(Event("forcerenew.unauthenticatable", (("client", client),)))
            return
        message = build_forcerenew(
            server_id=self.config.server_id,
            client_address=lease.address,
            chaddr=lease.chaddr,
            xid=lease.xid,
            auth=auth,
        )
        payload = sign(encode_message(message), sign_key)
        self.forcerenews.sent(client, now)
        self.counters["sent:DHCPFORCERENEW"] += 1
        out.replies.append(Reply(payload, lease.address, CLIENT_PORT))
        out.events.append(
            Event(
                "forcerenew.sent",
                (("client", client), ("address", lease.address), ("attempt", pending.attempts)),
            )
        )

    # == management ======================================================================

    def put_vpn(self, vpn: VpnRecord, now: float) -> Outcome:
        out = Outcome(writes=self.directory.put_vpn(vpn))
        self._vpn_changed(frozenset({vpn.vpn_id}), f"VPN {vpn.vpn_id} changed", now, out)
        return out

    def delete_vpn(self, vpn_id: int, now: float) -> Outcome:
        return Outcome(writes=self.directory.delete_vpn(vpn_id))

    def put_ce(self, ce: CeRecord, key: bytes | None, now: float) -> Outcome:
        """Add or change a CE; every member of a VPN it joins, leaves or stays in is told."""
        old = self.directory.get_ce(ce.name)
        out = Outcome(writes=self.directory.put_ce(ce, key))
        changed = ce.vpns if old is None else old.vpns ^ ce.vpns
        if old is not None and (old.static_address != ce.static_address or old.client != ce.client):
            changed = old.vpns | ce.vpns
        if changed:
            self._vpn_changed(frozenset(changed), f"CE {ce.name} changed", now, out)
        return out

    def delete_ce(self, name: str, now: float) -> Outcome:
        old = self.directory.get_ce(name)
        out = Outcome(writes=self.directory.delete_ce(name))
        if old is not None:
            if old.client is not None:
                self.forcerenews.drop(old.client)
            self._vpn_changed(old.vpns, f"CE {name} removed", now, out)
        return out

    def forcerenew_ce(self, name: str, now: float) -> Outcome:
        """An operator's FORCERENEW to one CE (it must hold a lease)."""
        ce = self.directory.get_ce(name)
        if ce is None or ce.client is None:
            raise KeyError(name)
        out = Outcome()
        if self.leases.active_lease_of(ce.client, now) is None:
            raise LookupError(f"CE {name} holds no lease")
        self.forcerenews.schedule(ce.client, "operator request", now)
        return out

    _handlers: ClassVar[dict[MessageType, Callable[[ServerEngine, _Context], None]]] = {
        MessageType.DHCPDISCOVER: _discover,
        MessageType.DHCPREQUEST: _request,
        MessageType.DHCPDECLINE: _decline,
        MessageType.DHCPRELEASE: _release,
        MessageType.DHCPINFORM: _inform,
    }


def _append_relay_info(payload: bytes, relay_info: bytes) -> bytes:
    """Insert option 82 just before END, after the MAC was computed.

    The relay strips option 82 before forwarding (RFC 3046 2.1.1), so the client checks
    the MAC over the message without it: sign first, then add 82 before END, and the
    bytes the client receives are exactly the bytes that were signed.
    """
    end = _end_of_options(payload)
    return payload[:end] + b"".join(instances(82, relay_info)) + payload[end:]


def _end_of_options(payload: bytes) -> int:
    spans: list[tuple[int, int, int]] = []
    scan_field(payload, 240, len(payload), spans)
    return spans[-1][2] if spans else 240
