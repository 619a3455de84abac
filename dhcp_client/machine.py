"""The RFC 2131 client state machine, sans-IO: datagrams, timers and commands in; datagrams
to send, one timer deadline and events out.

Time (``now``, Unix seconds) and randomness are passed in, persistence is an injected
:class:`~dhcp_client.persistence.StateStore`; nothing here touches a socket or a clock.
Transitions are a table (:data:`TRANSITIONS`) and handlers are chosen from a dict keyed
by ``(state, input)``: an input with no entry is dropped and counted (a datagram) or
refused with :class:`LocalProtocolError` (a command).

Every received datagram is handled in two phases, as the server does: everything the
client needs is read and checked first (decoding, authentication, replay, option values,
bounds), and only then does state change. A refused message changes nothing but a
counter.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import ClassVar, Final, Protocol

from dhcp_client.config import ClientConfig
from dhcp_client.events import (
    INFINITE_LEASE,
    AuthenticationFailure,
    ClientEvent,
    Lease,
    LeaseBound,
    LeaseLost,
    LeaseRenewed,
    VpnPeersChanged,
    VpnServersChanged,
)
from dhcp_client.persistence import ClientState, StateStore
from options import BOOTREPLY, BOOTREQUEST, DecodeError, DhcpMessage, MessageType, Options
from options.message import FLAG_BROADCAST, decode_message, encode_message
from options.replay import ReplayCounter
from options.rfc2132 import (
    CLIENT_IDENTIFIER,
    DOMAIN_NAME,
    DOMAIN_NAME_SERVER,
    HOST_NAME,
    IP_ADDRESS_LEASE_TIME,
    MAXIMUM_MESSAGE_SIZE,
    MESSAGE_TYPE,
    PARAMETER_REQUEST_LIST,
    REBINDING_TIME,
    RENEWAL_TIME,
    REQUESTED_IP_ADDRESS,
    ROUTER,
    SERVER_IDENTIFIER,
    SUBNET_MASK,
)
from options.rfc3118 import AUTHENTICATION, Authentication, AuthProtocol, StaticKeys, sign, verify
from options.rfc6704 import FORCERENEW_NONCE_CAPABLE, TYPE_HMAC, nonce_of
from options.vpn import PeerCeBlock, apply_peer_blocks, registry_with_vpn_codes, vpn_specs

__all__ = [
    "TRANSITIONS",
    "ClientMachine",
    "Input",
    "LocalProtocolError",
    "RandomSource",
    "State",
    "Step",
    "Transmit",
]

SERVER_PORT: Final = 67
_ZERO: Final = IPv4Address(0)
_BROADCAST: Final = IPv4Address("255.255.255.255")
#: RFC 2131 4.4.5: retransmit in RENEWING/REBINDING "down to a minimum of 60 seconds".
_MIN_RENEW_RETRY: Final = 60.0


class State(enum.Enum):
    """RFC 2131 figure 5, plus STOPPED (not started, or released) for the embedder."""

    STOPPED = "STOPPED"
    INIT = "INIT"
    SELECTING = "SELECTING"
    REQUESTING = "REQUESTING"
    BOUND = "BOUND"
    RENEWING = "RENEWING"
    REBINDING = "REBINDING"
    INIT_REBOOT = "INIT-REBOOT"
    REBOOTING = "REBOOTING"


class Input(enum.Enum):
    START = "start"
    STOP = "stop"
    RELEASE = "release"
    CONFLICT = "conflict"  # the driver found the address in use: DECLINE
    TIMER = "timer"
    OFFER = "DHCPOFFER"
    ACK = "DHCPACK"
    NAK = "DHCPNAK"
    INFORM_ACK = "DHCPACK(inform)"
    FORCERENEW = "DHCPFORCERENEW"


_S = State
#: Every transition the machine may take; anything else is a bug (``_goto`` asserts it).
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    _S.STOPPED: frozenset({_S.INIT, _S.INIT_REBOOT}),
    _S.INIT: frozenset({_S.SELECTING, _S.STOPPED}),
    _S.SELECTING: frozenset({_S.REQUESTING, _S.STOPPED}),
    _S.REQUESTING: frozenset({_S.BOUND, _S.INIT, _S.STOPPED}),
    _S.BOUND: frozenset({_S.RENEWING, _S.REBINDING, _S.INIT, _S.STOPPED}),
    _S.RENEWING: frozenset({_S.BOUND, _S.REBINDING, _S.INIT, _S.STOPPED}),
    _S.REBINDING: frozenset({_S.BOUND, _S.INIT, _S.STOPPED}),
    _S.INIT_REBOOT: frozenset({_S.REBOOTING, _S.STOPPED}),
    _S.REBOOTING: frozenset({_S.BOUND, _S.INIT, _S.STOPPED}),
}

_COMMANDS: Final = frozenset({Input.START, Input.STOP, Input.RELEASE, Input.CONFLICT})
_MESSAGE_INPUTS: Final = {
    MessageType.DHCPOFFER: Input.OFFER,
    MessageType.DHCPACK: Input.ACK,
    MessageType.DHCPNAK: Input.NAK,
    MessageType.DHCPFORCERENEW: Input.FORCERENEW,
}


class LocalProtocolError(RuntimeError):
    """The embedder asked for something the current state does not allow (release while stopped)."""


class RandomSource(Protocol):
    """What the machine needs of randomness; ``random.Random`` and ``SystemRandom`` fit."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Transmit:
    """A datagram for UDP port 67: broadcast on the interface, or unicast to ``destination``."""

    payload: bytes
    destination: IPv4Address
    broadcast: bool
    port: int = SERVER_PORT


@dataclass(frozen=True, slots=True)
class Step:
    """Everything one input caused."""

    send: tuple[Transmit, ...] = ()
    events: tuple[ClientEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class _Reply:
    """A server message read and checked in full before anything changes."""

    msg: DhcpMessage
    kind: Input
    source: IPv4Address
    auth: Authentication | None
    server_id: IPv4Address | None
    lease: Lease | None = None  # OFFER/ACK: the lease it describes (times from ``acquired``)
    nonce: bytes | None = None
    peers: dict[int, frozenset[IPv4Address]] | None = None  # INFORM reply: the new complete sets
    vpn_servers: tuple[IPv4Address, ...] = ()


@dataclass(slots=True)
class _Transaction:
    """One message being (re)transmitted until answered or given up."""

    build: Callable[[float], Transmit]
    started: float
    attempts: int = 0
    deadline: float = math.inf


@dataclass(slots=True)
class _Output:
    send: list[Transmit] = field(default_factory=list)
    events: list[ClientEvent] = field(default_factory=list)

    def step(self) -> Step:
        return Step(tuple(self.send), tuple(self.events))


_Handler = Callable[["ClientMachine", "_Reply | None", float, _Output], None]


class _StateCeiling:
    """The replay counter's ceiling, saved with the rest of the client's state."""

    __slots__ = ("_machine",)

    def __init__(self, machine: ClientMachine) -> None:
        self._machine = machine

    def load(self) -> int:
        return self._machine._replay_ceiling

    def save(self, ceiling: int) -> None:
        self._machine._replay_ceiling = ceiling
        self._machine._persist()


class ClientMachine:
    """One DHCP client on one interface. Not thread-safe: one driver feeds it.

    Inputs: :meth:`start`, :meth:`stop`, :meth:`release`, :meth:`address_conflict`,
    :meth:`receive_datagram`, :meth:`handle_timer`. Each returns a :class:`Step`;
    :meth:`get_timer` says when to call :meth:`handle_timer` next.
    """

    def __init__(self, config: ClientConfig, store: StateStore, rng: RandomSource) -> None:
        self.config = config
        self._store = store
        self._rng = rng
        self.peer_ce, self.vpn_server_spec = vpn_specs(config.peer_ce_code, config.vpn_server_code)
        self._registry = registry_with_vpn_codes(config.peer_ce_code, config.vpn_server_code)
        self._keys = (
            StaticKeys({config.secret_id: config.key})
            if config.key is not None and config.secret_id is not None
            else None
        )
        self.counters: Counter[str] = Counter()
        self.state = State.STOPPED
        #: The INFORMING sub-state of BOUND: True while a DHCPINFORM awaits its reply.
        self.informing = False
        saved = store.load() or ClientState()
        self.lease: Lease | None = saved.lease
        self._server_replay = saved.server_replay
        self._nonce = saved.nonce
        self._nonce_replay = saved.nonce_replay
        self._replay_ceiling = saved.replay_ceiling
        self.peers: dict[int, frozenset[IPv4Address]] = dict(saved.peers)
        self.vpn_servers: tuple[IPv4Address, ...] = saved.vpn_servers
        self._replay = ReplayCounter(_StateCeiling(self))
        #: The xid of the current DISCOVER/REQUEST exchange: a FORCERENEW must carry it.
        self.xid = 0
        self._offer: Lease | None = None
        self._txn: _Transaction | None = None
        self._deadline = math.inf  # the state's own timer (INIT delay, T1, T2, expiry)
        self._inform: _Transaction | None = None
        self._inform_xid: int | None = None
        self._inform_wanted = False  # an INFORM to send once BOUND again (after FORCERENEW)
        self._last_inform_xid: int | None = None

    # == public inputs =================================================================

    def start(self, now: float) -> Step:
        """Begin: INIT-REBOOT with a remembered unexpired lease, else INIT."""
        return self._command(Input.START, now)

    def stop(self, now: float) -> Step:
        """Stop without releasing: the lease is remembered for INIT-REBOOT."""
        return self._command(Input.STOP, now)

    def release(self, now: float) -> Step:
        """Give the address back (DHCPRELEASE) and stop."""
        return self._command(Input.RELEASE, now)

    def address_conflict(self, now: float) -> Step:
        """The address just bound is in use (ARP): DHCPDECLINE, then start again (RFC 2131 3.1)."""
        return self._command(Input.CONFLICT, now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        deadline = min(
            self._deadline,
            self._txn.deadline if self._txn is not None else math.inf,
            self._inform.deadline if self._inform is not None else math.inf,
        )
        return None if deadline == math.inf else deadline

    def handle_timer(self, now: float) -> Step:
        out = _Output()
        if self._inform is not None and now >= self._inform.deadline:
            self._inform_timer(now, out)
        txn_due = self._txn is not None and now >= self._txn.deadline
        if txn_due or now >= self._deadline:
            self._dispatch(Input.TIMER, None, now, out)
        return out.step()

    def receive_datagram(self, data: bytes, source: IPv4Address, now: float) -> Step:
        """One UDP datagram from port 67 (``source`` is its IP source address)."""
        out = _Output()
        reply = self._read(data, source, out)
        if reply is not None:
            self._commit_replay(reply)
            self._dispatch(reply.kind, reply, now, out)
        return out.step()

    def snapshot(self) -> ClientState:
        """What :class:`StateStore` holds: lease, replay values, nonce, peers."""
        return ClientState(
            lease=self.lease,
            server_replay=self._server_replay,
            nonce=self._nonce,
            nonce_replay=self._nonce_replay,
            replay_ceiling=self._replay_ceiling,
            peers=dict(self.peers),
            vpn_servers=self.vpn_servers,
        )

    # == dispatch ======================================================================

    def _command(self, kind: Input, now: float) -> Step:
        if (self.state, kind) not in self._handlers:
            raise LocalProtocolError(f"{kind.value} is not possible in state {self.state.value}")
        out = _Output()
        self._dispatch(kind, None, now, out)
        return out.step()

    def _dispatch(self, kind: Input, reply: _Reply | None, now: float, out: _Output) -> None:
        handler = self._handlers.get((self.state, kind))
        if handler is None:  # _read filters datagrams by state, and timers exist only where handled
            self.counters[f"dropped:unexpected_{kind.name.lower()}"] += 1
            return
        handler(self, reply, now, out)

    def _goto(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"transition {self.state.value} -> {state.value} is not in the table")
        self.state = state

    def _persist(self) -> None:
        self._store.save(self.snapshot())

    # == reading a datagram (phase 1: nothing changes here but counters) ================

    def _drop(self, counter: str) -> None:
        self.counters[f"dropped:{counter}"] += 1

    def _read(self, data: bytes, source: IPv4Address, out: _Output) -> _Reply | None:
        try:
            msg = decode_message(data, self._registry)
        except DecodeError:
            self._drop("malformed")
            return None
        if msg.op != BOOTREPLY:
            self._drop("not_a_reply")
            return None
        own = self.config.hardware_address
        # chaddr's first hlen octets, as dhcpcd compares them; ``hlen`` itself is not trusted
        # (our server's FORCERENEW says 16 for a 6-octet address).
        if msg.htype != self.config.htype or msg.chaddr[: len(own)] != own:
            self._drop("not_for_us")
            return None
        kind = _MESSAGE_INPUTS.get(msg.message_type) if msg.message_type is not None else None
        if kind is None:
            self._drop("unexpected_type")
            return None
        if kind is Input.ACK and self.informing and msg.xid == self._inform_xid:
            kind = Input.INFORM_ACK
        elif kind is Input.FORCERENEW:
            # dhcpcd: "xid equal to the client's CURRENT xid", never 0. Ours is the xid of the
            # last REQUEST, or of the DHCPINFORM sent since: a server may record either.
            if msg.xid == 0 or msg.xid not in (self.xid, self._last_inform_xid):
                self._drop("wrong_xid")
                return None
        elif msg.xid != self.xid or self._txn is None:
            self._drop("wrong_xid")  # replies answer our open transaction only
            return None
        if (self.state, kind) not in self._handlers:
            self._drop(f"unexpected_{kind.name.lower()}_in_{self.state.name.lower()}")
            return None
        if kind is Input.FORCERENEW and source in (_ZERO, _BROADCAST):
            self._drop("forcerenew_bad_source")  # dhcpcd checks this too
            return None
        try:
            auth = msg.options.get_value(AUTHENTICATION)
        except DecodeError:
            auth = None  # verify() below reports the reason
        refusal = self._authenticate(msg, kind, auth)
        if refusal is not None:
            self._drop(refusal)
            out.events.append(AuthenticationFailure(refusal, kind.value, source))
            return None
        try:
            return self._read_values(msg, kind, source, auth)
        except DecodeError:
            self._drop(f"malformed_{kind.name.lower()}")
            return None
        except _HostileReplyError as exc:
            self._drop(exc.counter)
            return None

    def _authenticate(self, msg: DhcpMessage, kind: Input, auth: Authentication | None) -> str | None:
        """None when the message may be acted upon, else the counter naming why not.

        RFC 3118 section 5.3: the client "MUST validate" a reply that carries
        authentication and, configured with a key, MUST NOT accept one that does not:
        there is no fallback to unauthenticated. RFC 3203 section 6: a FORCERENEW "MUST be
        authenticated" whatever the configuration.
        """
        if self._keys is not None:
            if auth is None:
                return "auth_missing"
            if auth.protocol != AuthProtocol.DELAYED:
                return "auth_wrong_protocol"  # the server answers with the protocol we use
            check = verify(msg.wire, self._keys)
            if not check.valid:
                return "auth_failed"
            if self._server_replay is not None and auth.replay_detection <= self._server_replay:
                return "replay"  # strictly greater than the last accepted (RDM 0)
            return None
        if kind is not Input.FORCERENEW:
            return None  # plain RFC 2131; an RFC 6704 nonce in an ACK is checked in _read_values
        if auth is None or auth.protocol != AuthProtocol.RECONFIGURE_KEY:
            return "forcerenew_unauthenticated"
        if self._nonce is None:
            return "forcerenew_no_nonce"
        if auth.information[:1] != bytes((TYPE_HMAC,)):
            return "forcerenew_unauthenticated"
        if not verify(msg.wire, nonce=self._nonce).valid:
            return "auth_failed"
        if self._nonce_replay is not None and auth.replay_detection <= self._nonce_replay:
            return "replay"
        return None

    def _read_values(
        self, msg: DhcpMessage, kind: Input, source: IPv4Address, auth: Authentication | None
    ) -> _Reply:
        options = msg.options
        server_id = options.get_value(SERVER_IDENTIFIER)
        if kind is Input.FORCERENEW or kind is Input.NAK:
            return _Reply(msg, kind, source, auth, server_id)
        if kind is Input.INFORM_ACK:
            peers, servers = self._read_vpn_data(options)
            return _Reply(msg, kind, source, auth, server_id, peers=peers, vpn_servers=servers)
        # OFFER or ACK of the lease exchange.
        if msg.yiaddr == _ZERO:
            raise _HostileReplyError("no_address_offered")
        renewing = self.state in (State.RENEWING, State.REBINDING)
        if renewing and self.lease is not None and msg.yiaddr != self.lease.address:
            raise _HostileReplyError("ack_other_address")
        server = server_id or (self.lease.server_id if self.lease is not None else None) or source
        if server in (_ZERO, _BROADCAST):
            raise _HostileReplyError("no_server_identifier")
        lease_time = options.get_value(IP_ADDRESS_LEASE_TIME)
        if lease_time is None or lease_time == 0:
            raise _HostileReplyError("no_lease_time")
        t1 = options.get_value(RENEWAL_TIME)
        t2 = options.get_value(REBINDING_TIME)
        if lease_time != INFINITE_LEASE and (t1 is None or t2 is None or not 0 < t1 < t2 < lease_time):
            # RFC 2131 4.4.5 defaults: "T1 defaults to (0.5 * duration_of_lease). T2 defaults
            # to (0.875 * duration_of_lease)." A lease too short for both is refused.
            t1, t2 = lease_time // 2, lease_time * 7 // 8
            if not 0 < t1 < t2 < lease_time:
                raise _HostileReplyError("lease_too_short")
        acquired = self._txn.started if self._txn is not None else 0.0
        lease = Lease(
            address=msg.yiaddr,
            server_id=server,
            acquired=acquired,
            lease_time=lease_time,
            renewal_time=t1 or 0,
            rebinding_time=t2 or 0,
            subnet_mask=options.get_value(SUBNET_MASK),
            routers=options.get_value(ROUTER) or (),
            dns_servers=options.get_value(DOMAIN_NAME_SERVER) or (),
            domain_name=options.get_value(DOMAIN_NAME),
        )
        nonce = None
        if kind is Input.ACK and self._keys is None and auth is not None:
            candidate = nonce_of(auth) if auth.protocol == AuthProtocol.RECONFIGURE_KEY else None
            fresh = self._nonce_replay is None or auth.replay_detection > self._nonce_replay
            if candidate is not None and fresh:
                nonce = candidate
            elif candidate is not None:
                self.counters["ignored:stale_nonce"] += 1
        return _Reply(msg, kind, source, auth, server, lease=lease, nonce=nonce)

    def _read_vpn_data(
        self, options: Options
    ) -> tuple[dict[int, frozenset[IPv4Address]], tuple[IPv4Address, ...]]:
        """The complete peer sets of a DHCPINFORM reply (docs/wire-format.md section 5), bounded."""
        blocks: tuple[PeerCeBlock, ...] = options.get_value(self.peer_ce) or ()
        limit = self.config.max_vpns * self.config.max_peers_per_vpn
        if sum(len(b.peers) for b in blocks) > limit:
            raise _HostileReplyError("peer_list_too_long")
        if len({b.vpn_id for b in blocks}) > self.config.max_vpns:
            raise _HostileReplyError("too_many_vpns")
        peers = apply_peer_blocks(self.peers, blocks, complete=True)
        own = self.lease.address if self.lease is not None else None
        cleaned = {v: p - {own} if own in p else p for v, p in peers.items()}
        if any(len(p) > self.config.max_peers_per_vpn for p in cleaned.values()):
            raise _HostileReplyError("peer_list_too_long")
        servers = options.get_value(self.vpn_server_spec) or ()
        if len(servers) > self.config.max_peers_per_vpn:
            raise _HostileReplyError("server_list_too_long")
        return cleaned, tuple(dict.fromkeys(servers))

    def _commit_replay(self, reply: _Reply) -> None:
        """Phase 2 starts: the message is accepted, its replay value becomes the floor."""
        auth = reply.auth
        if auth is None:
            return
        if self._keys is not None:
            self._server_replay = auth.replay_detection
        elif reply.kind is Input.FORCERENEW or reply.nonce is not None:
            self._nonce_replay = auth.replay_detection
            if reply.nonce is not None:
                self._nonce = reply.nonce
        else:
            return
        self._persist()

    # == building messages ==============================================================

    def _new_xid(self) -> int:
        return self._rng.getrandbits(32)

    def _message(
        self,
        message_type: MessageType,
        now: float,
        *,
        xid: int,
        started: float,
        ciaddr: IPv4Address = _ZERO,
        requested: IPv4Address | None = None,
        server_id: IPv4Address | None = None,
        broadcast_flag: bool = False,
    ) -> bytes:
        """One client message; with a key, signed over its final bytes (RFC 3118 5.1)."""
        cfg = self.config
        t = MessageType
        items: list[tuple[int, bytes]] = [MESSAGE_TYPE.item(message_type)]
        if cfg.client_id is not None:
            items.append((CLIENT_IDENTIFIER.code, cfg.client_id))
        if requested is not None:
            items.append(REQUESTED_IP_ADDRESS.item(requested))
        if server_id is not None:
            items.append(SERVER_IDENTIFIER.item(server_id))
        if message_type not in (t.DHCPDECLINE, t.DHCPRELEASE):  # RFC 2131 table 5: MUST NOT
            items.append(MAXIMUM_MESSAGE_SIZE.item(cfg.max_message_size))
            prl = cfg.parameter_request_list
            if message_type is t.DHCPINFORM:
                prl = (*prl, cfg.peer_ce_code, cfg.vpn_server_code)
            items.append(PARAMETER_REQUEST_LIST.item(prl))
            if cfg.hostname:
                items.append(HOST_NAME.item(cfg.hostname))
        auth: Authentication | None = None
        if self._keys is not None:
            replay = self._replay.next(now)
            # RFC 3118 5.3: DISCOVER only "requests authentication"; everything else proves it.
            secret = None if message_type is t.DHCPDISCOVER else cfg.secret_id
            auth = Authentication.delayed(replay, secret)
            items.append(AUTHENTICATION.item(auth))
        elif cfg.nonce_capable and message_type in (t.DHCPDISCOVER, t.DHCPREQUEST, t.DHCPINFORM):
            items.append(FORCERENEW_NONCE_CAPABLE.item((1,)))  # RFC 6704 section 3.1: HMAC-MD5
        msg = DhcpMessage(
            op=BOOTREQUEST,
            xid=xid,
            htype=cfg.htype,
            hlen=len(cfg.hardware_address),
            secs=min(max(int(now - started), 0), 0xFFFF),
            flags=FLAG_BROADCAST if broadcast_flag else 0,
            ciaddr=ciaddr,
            chaddr=cfg.hardware_address,
            options=Options(items),
        )
        payload = encode_message(msg, max_payload=cfg.max_message_size - 28)
        if auth is not None and auth.has_mac:
            assert cfg.key is not None
            payload = sign(payload, cfg.key)
        return payload

    def _backoff(self, attempt: int) -> float:
        """RFC 2131 4.1: 4 s, 8 s, ... up to 64 s, "randomized by ... -1 to +1"."""
        return 4.0 * 2.0 ** min(attempt, 4) + (self._rng.random() * 2.0 - 1.0)

    def _transmit(self, txn: _Transaction, now: float, out: _Output, delay: float) -> None:
        """Send (a fresh build: new replay value and MAC every time) and set the retry timer."""
        out.send.append(txn.build(now))
        txn.attempts += 1
        txn.deadline = now + delay

    def _begin(self, build: Callable[[float], Transmit], now: float, out: _Output) -> None:
        self._txn = _Transaction(build, now)
        self._transmit(self._txn, now, out, self._backoff(0))

    # == handlers (phase 2) ===============================================================

    def _on_start(self, _r: _Reply | None, now: float, out: _Output) -> None:
        delay = self._rng.random() * self.config.initial_delay
        lease = self.lease
        if lease is not None and now < lease.expires_at:
            self._goto(State.INIT_REBOOT)
            self._deadline = now + delay
        else:
            if lease is not None:
                self.lease = None
                self._persist()
            self._enter_init(now + delay)

    def _enter_init(self, when: float) -> None:
        self._goto(State.INIT)
        self._txn = None
        self._offer = None
        self._cancel_inform()
        self._deadline = when

    def _init_timer(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """INIT -> SELECTING: broadcast a DISCOVER, retransmitted with backoff until an OFFER."""
        self._goto(State.SELECTING)
        self._deadline = math.inf
        xid = self.xid = self._new_xid()
        self._last_inform_xid = None
        requested = self.lease.address if self.lease is not None else None

        def build(at: float) -> Transmit:
            payload = self._message(
                MessageType.DHCPDISCOVER,
                at,
                xid=xid,
                started=now,
                requested=requested,
                broadcast_flag=self.config.broadcast_flag,
            )
            return Transmit(payload, _BROADCAST, True)

        self._begin(build, now, out)

    def _retransmit_forever(self, _r: _Reply | None, now: float, out: _Output) -> None:
        assert self._txn is not None
        self._transmit(self._txn, now, out, self._backoff(self._txn.attempts))

    def _on_offer(self, reply: _Reply | None, now: float, out: _Output) -> None:
        """SELECTING -> REQUESTING: the first acceptable OFFER wins (as dhcpcd does)."""
        assert reply is not None
        assert reply.lease is not None
        self._goto(State.REQUESTING)
        self._offer = reply.lease
        xid, started = self.xid, self._txn.started if self._txn is not None else now
        address, server = reply.lease.address, reply.lease.server_id

        def build(at: float) -> Transmit:
            payload = self._message(
                MessageType.DHCPREQUEST,
                at,
                xid=xid,
                started=started,
                requested=address,
                server_id=server,
                broadcast_flag=self.config.broadcast_flag,
            )
            return Transmit(payload, _BROADCAST, True)

        self._txn = _Transaction(build, started)
        self._transmit(self._txn, now, out, self._backoff(0))

    def _retransmit_or_restart(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """REQUESTING/REBOOTING: "If the client receives neither a DHCPACK or a DHCPNAK
        message after employing the retransmission algorithm, the client reverts to INIT
        state and restarts the initialization process" (RFC 2131 3.1 step 5)."""
        assert self._txn is not None
        retries = (
            self.config.request_retries if self.state is State.REQUESTING else self.config.reboot_retries
        )
        if self._txn.attempts > retries:
            self.counters[f"gave_up:{self.state.name.lower()}"] += 1
            self._enter_init(now)
            return
        self._transmit(self._txn, now, out, self._backoff(self._txn.attempts))

    def _reboot_timer(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """INIT-REBOOT -> REBOOTING: "broadcasts a DHCPREQUEST ... 'requested IP address'
        option MUST be filled in ... 'server identifier' MUST NOT" (RFC 2131 4.3.2)."""
        assert self.lease is not None
        self._goto(State.REBOOTING)
        self._deadline = math.inf
        xid = self.xid = self._new_xid()
        self._last_inform_xid = None
        address = self.lease.address

        def build(at: float) -> Transmit:
            payload = self._message(
                MessageType.DHCPREQUEST,
                at,
                xid=xid,
                started=now,
                requested=address,
                broadcast_flag=self.config.broadcast_flag,
            )
            return Transmit(payload, _BROADCAST, True)

        self._begin(build, now, out)

    def _on_ack_bind(self, reply: _Reply | None, now: float, out: _Output) -> None:
        """REQUESTING/REBOOTING -> BOUND."""
        assert reply is not None
        assert reply.lease is not None
        self._goto(State.BOUND)
        self._bound(reply.lease, now, out)
        out.events.append(LeaseBound(reply.lease))
        self._start_inform_if_wanted(now, out, after_bind=True)

    def _bound(self, lease: Lease, now: float, out: _Output) -> None:
        self.lease = lease
        self._offer = None
        self._txn = None
        self._deadline = lease.t1_at
        self._persist()

    def _on_ack_renew(self, reply: _Reply | None, now: float, out: _Output) -> None:
        """RENEWING/REBINDING -> BOUND with new times, same address."""
        assert reply is not None
        assert reply.lease is not None
        self._goto(State.BOUND)
        self._bound(reply.lease, now, out)
        out.events.append(LeaseRenewed(reply.lease))
        self._start_inform_if_wanted(now, out, after_bind=self.config.inform_on_renew)

    def _on_nak(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """ "If the client receives a DHCPNAK message, the client restarts the configuration
        process" (RFC 2131 4.4.1); a lease it held is lost."""
        self._lose("nak", out)
        self._enter_init(now)

    def _lose(self, reason: str, out: _Output) -> None:
        if self.lease is not None:
            if self.state in (State.BOUND, State.RENEWING, State.REBINDING):
                out.events.append(LeaseLost(self.lease.address, reason))
            self.lease = None
            self._persist()

    def _bound_timer(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """T1: BOUND -> RENEWING (or further, if time jumped past T2 or the expiry)."""
        lease = self.lease
        assert lease is not None
        if now >= lease.expires_at:
            self._expire(now, out)
        elif now >= lease.t2_at:
            self._enter_rebinding(now, out)
        else:
            self._goto(State.RENEWING)
            self._cancel_inform()
            self._renew_transaction(now, out, broadcast=False)

    def _renew_transaction(self, now: float, out: _Output, *, broadcast: bool) -> None:
        """A REQUEST with ciaddr set: unicast to the server (RENEWING) or broadcast (REBINDING);
        "'server identifier' MUST NOT be filled in" (RFC 2131 4.3.2)."""
        assert self.lease is not None
        self._deadline = math.inf  # the retransmission timer caps at T2 / expiry
        xid = self.xid = self._new_xid()
        self._last_inform_xid = None
        address, server = self.lease.address, self.lease.server_id

        def build(at: float) -> Transmit:
            payload = self._message(MessageType.DHCPREQUEST, at, xid=xid, started=now, ciaddr=address)
            return Transmit(payload, _BROADCAST if broadcast else server, broadcast)

        self._txn = _Transaction(build, now)
        self._transmit(self._txn, now, out, self._renew_retry(now))

    def _renew_retry(self, now: float) -> float:
        """RFC 2131 4.4.5: "one-half of the remaining time until T2 (in RENEWING state) and
        one-half of the remaining lease time (in REBINDING state), down to a minimum of 60
        seconds"; never past the next phase, whose timer takes over there."""
        assert self.lease is not None
        end = self.lease.t2_at if self.state is State.RENEWING else self.lease.expires_at
        remaining = end - now
        if math.isinf(remaining):
            return 64.0  # an infinite lease renewed on FORCERENEW: RFC 2131 4.1's longest wait
        return min(max(remaining / 2, _MIN_RENEW_RETRY), max(remaining, 0.0))

    def _renewing_timer(self, _r: _Reply | None, now: float, out: _Output) -> None:
        assert self.lease is not None
        assert self._txn is not None
        if now >= self.lease.expires_at:
            self._expire(now, out)
        elif now >= self.lease.t2_at:
            self._enter_rebinding(now, out)
        else:
            self._transmit(self._txn, now, out, self._renew_retry(now))

    def _enter_rebinding(self, now: float, out: _Output) -> None:
        self._goto(State.REBINDING)
        self._cancel_inform()
        self._renew_transaction(now, out, broadcast=True)

    def _rebinding_timer(self, _r: _Reply | None, now: float, out: _Output) -> None:
        assert self.lease is not None
        assert self._txn is not None
        if now >= self.lease.expires_at:
            self._expire(now, out)
        else:
            self._transmit(self._txn, now, out, self._renew_retry(now))

    def _expire(self, now: float, out: _Output) -> None:
        """ "If the lease expires before the client receives a DHCPACK, the client moves to
        INIT state, MUST immediately stop any other network processing" (RFC 2131 4.4.5)."""
        self._lose("expired", out)
        self._enter_init(now)

    def _on_forcerenew(self, reply: _Reply | None, now: float, out: _Output) -> None:
        """RFC 3203 section 4: "the client ... MUST then try to renew its lease according to
        normal DHCP procedures": RENEWING now, and a fresh DHCPINFORM once it is answered."""
        self.counters["accepted:forcerenew"] += 1
        self._goto(State.RENEWING)
        self._cancel_inform()
        self._inform_wanted = self.config.inform
        self._renew_transaction(now, out, broadcast=False)

    def _on_conflict(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """RFC 2131 3.1 step 5: "the client MUST send a DHCPDECLINE message to the server and
        restarts the configuration process ... SHOULD wait a minimum of ten seconds"."""
        lease = self.lease
        assert lease is not None
        payload = self._message(
            MessageType.DHCPDECLINE,
            now,
            xid=self._new_xid(),
            started=now,
            requested=lease.address,
            server_id=lease.server_id,
        )
        out.send.append(Transmit(payload, _BROADCAST, True))
        self._lose("declined", out)
        self._enter_init(now + self.config.decline_wait)

    def _on_release(self, _r: _Reply | None, now: float, out: _Output) -> None:
        """DHCPRELEASE, unicast to the server, "'server identifier' MUST" (RFC 2131 table 5)."""
        lease = self.lease
        assert lease is not None
        payload = self._message(
            MessageType.DHCPRELEASE,
            now,
            xid=self._new_xid(),
            started=now,
            ciaddr=lease.address,
            server_id=lease.server_id,
        )
        out.send.append(Transmit(payload, lease.server_id, False))
        self._lose("released", out)
        self._enter_stopped()

    def _on_stop(self, _r: _Reply | None, now: float, out: _Output) -> None:
        self._enter_stopped()

    def _enter_stopped(self) -> None:
        self._goto(State.STOPPED)
        self._txn = None
        self._offer = None
        self._deadline = math.inf
        self._cancel_inform()
        self._inform_wanted = False

    # == DHCPINFORM (the INFORMING sub-state of BOUND) =====================================

    def _start_inform_if_wanted(self, now: float, out: _Output, *, after_bind: bool) -> None:
        if not self.config.inform or not (after_bind or self._inform_wanted):
            return
        self._inform_wanted = False
        lease = self.lease
        assert lease is not None
        xid = self._inform_xid = self._last_inform_xid = self._new_xid()
        address, server = lease.address, lease.server_id

        def build(at: float) -> Transmit:
            # RFC 2131 4.4.3: ciaddr is the client's address; our server answers it unicast.
            payload = self._message(MessageType.DHCPINFORM, at, xid=xid, started=now, ciaddr=address)
            return Transmit(payload, server, False)

        self.informing = True
        self._inform = _Transaction(build, now)
        self._transmit(self._inform, now, out, self._backoff(0))

    def _inform_timer(self, now: float, out: _Output) -> None:
        txn = self._inform
        assert txn is not None
        if txn.attempts > self.config.inform_retries:
            self.counters["gave_up:inform"] += 1
            self._cancel_inform()
            return
        self._transmit(txn, now, out, self._backoff(txn.attempts))

    def _cancel_inform(self) -> None:
        if self.informing:
            self._inform_wanted = True  # ask again once BOUND
        self.informing = False
        self._inform = None
        self._inform_xid = None

    def _on_inform_ack(self, reply: _Reply | None, now: float, out: _Output) -> None:
        """Apply the complete peer sets and the server list; report what changed."""
        assert reply is not None
        assert reply.peers is not None
        self.informing = False
        self._inform = None
        self._inform_xid = None
        self.counters["accepted:inform_reply"] += 1
        old = self.peers
        new = reply.peers
        for vpn_id in sorted(old.keys() | new.keys()):
            before = old.get(vpn_id, frozenset())
            after = new.get(vpn_id, frozenset())
            member = vpn_id in new
            if before != after or (vpn_id in old) != member:
                out.events.append(VpnPeersChanged(vpn_id, after - before, before - after, after, member))
        if reply.vpn_servers != self.vpn_servers:
            out.events.append(VpnServersChanged(reply.vpn_servers))
        self.peers = dict(new)
        self.vpn_servers = reply.vpn_servers
        self._persist()

    _handlers: ClassVar[dict[tuple[State, Input], _Handler]] = {
        (_S.STOPPED, Input.START): _on_start,
        (_S.INIT, Input.TIMER): _init_timer,
        (_S.INIT, Input.STOP): _on_stop,
        (_S.SELECTING, Input.TIMER): _retransmit_forever,
        (_S.SELECTING, Input.OFFER): _on_offer,
        (_S.SELECTING, Input.STOP): _on_stop,
        (_S.REQUESTING, Input.TIMER): _retransmit_or_restart,
        (_S.REQUESTING, Input.ACK): _on_ack_bind,
        (_S.REQUESTING, Input.NAK): _on_nak,
        (_S.REQUESTING, Input.STOP): _on_stop,
        (_S.INIT_REBOOT, Input.TIMER): _reboot_timer,
        (_S.INIT_REBOOT, Input.STOP): _on_stop,
        (_S.REBOOTING, Input.TIMER): _retransmit_or_restart,
        (_S.REBOOTING, Input.ACK): _on_ack_bind,
        (_S.REBOOTING, Input.NAK): _on_nak,
        (_S.REBOOTING, Input.STOP): _on_stop,
        (_S.BOUND, Input.TIMER): _bound_timer,
        (_S.BOUND, Input.INFORM_ACK): _on_inform_ack,
        (_S.BOUND, Input.FORCERENEW): _on_forcerenew,
        (_S.BOUND, Input.CONFLICT): _on_conflict,
        (_S.BOUND, Input.RELEASE): _on_release,
        (_S.BOUND, Input.STOP): _on_stop,
        (_S.RENEWING, Input.TIMER): _renewing_timer,
        (_S.RENEWING, Input.ACK): _on_ack_renew,
        (_S.RENEWING, Input.NAK): _on_nak,
        (_S.RENEWING, Input.RELEASE): _on_release,
        (_S.RENEWING, Input.STOP): _on_stop,
        (_S.REBINDING, Input.TIMER): _rebinding_timer,
        (_S.REBINDING, Input.ACK): _on_ack_renew,
        (_S.REBINDING, Input.NAK): _on_nak,
        (_S.REBINDING, Input.RELEASE): _on_release,
        (_S.REBINDING, Input.STOP): _on_stop,
    }


class _HostileReplyError(Exception):
    """A reply that decodes but that no honest server sends; ``counter`` says what."""

    def __init__(self, counter: str) -> None:
        super().__init__(counter)
        self.counter = counter
