"""The asyncio UDP driver: port 67 in, the engine in the middle, group commit, replies out.

The loop, per wake-up of a listening socket:

1. drain every datagram that is ready (at most ``batch_limit``) into
   :meth:`ServerEngine.handle`; replies that need no durable write (OFFER, NAK, INFORM
   answers) are sent at once;
2. hand all store writes of the batch to ONE :meth:`Store.commit` (in a worker thread by
   default, so the loop keeps receiving while SQLite syncs; batches commit in order);
3. when that commit returns, send the batch's ``durable`` replies. An ACK therefore never
   leaves before its lease is on disk, yet every lease of a burst shares one fsync. While a
   commit is in flight the next batch accumulates and is committed as soon as it returns.

Time: the engine is given ``time.time()`` (wall-clock seconds), because lease expiry,
replay counters and FORCERENEW deadlines are stored and must mean the same thing after a
restart; ``engine.next_timer()`` is an absolute wall-clock time and is turned into a
``loop.call_at`` delay when scheduled, so a clock step only moves the next wake-up.

Every engine :class:`~dhcp_server.actions.Event` is one JSON line on the
``dhcp_server.events`` logger (events never hold key material). An exception raised while
handling one datagram is counted as ``internal_error`` and logged with its traceback but
without the datagram's bytes; the loop goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from dhcp_server.actions import Event, Outcome, Received, Reply, Write
from dhcp_server.config import StoreConfig
from dhcp_server.engine import ServerEngine
from dhcp_server.model import ServerConfig
from dhcp_server.netutil import (
    ANCILLARY_SPACE,
    IP_PKTINFO,
    SO_BINDTODEVICE,
    SO_TIMESTAMP,
    NeighbourError,
    Neighbours,
    NeighbourTable,
    interface_index,
    interface_name,
    pack_pktinfo,
    read_ancillary,
)
from dhcp_server.store import MemoryStore, Store, open_store

__all__ = ["DriverConfig", "ServerDriver", "ServerRuntime", "run_server", "serve"]

log = logging.getLogger("dhcp_server.driver")
events_log = logging.getLogger("dhcp_server.events")

_BROADCAST: Final = IPv4Address("255.255.255.255")
_SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Larger than any DHCP datagram the codec accepts (it bounds messages well below this).
_MAX_DATAGRAM: Final = 4096
#: Housekeeping (stale offers) runs at least this often even with no FORCERENEW pending.
_HOUSEKEEPING: Final = 30.0


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """How the driver listens. ``interfaces`` empty: one socket on every interface."""

    interfaces: tuple[str, ...] = ()
    address: str = "0.0.0.0"  # noqa: S104 - a DHCP server must hear broadcasts
    port: int = 67
    receive_buffer: int = 4 << 20
    send_buffer: int = 1 << 20
    batch_limit: int = 256
    #: Run ``store.commit`` in a worker thread (the loop keeps receiving during the fsync).
    commit_in_thread: bool = True
    #: A datagram that waited longer than this in the socket's queue (the kernel's arrival
    #: stamp) is dropped unanswered (``stale``): an overloaded server then spends its time on
    #: requests whose clients are still waiting, not on ones they have retransmitted or given
    #: up on (RFC 2131 4.1: a first retransmission after about 4 s). ``None``: answer all.
    max_queue_delay: float | None = 2.0

    def __post_init__(self) -> None:
        if self.batch_limit < 1:
            raise ValueError("batch_limit must be at least 1")
        if self.max_queue_delay is not None and self.max_queue_delay <= 0:
            raise ValueError("max_queue_delay must be positive (or None)")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is not a UDP port")


@dataclass(slots=True)
class _Listener:
    sock: socket.socket
    interface: str | None  # the SO_BINDTODEVICE interface, if any
    ifindex: int | None


@dataclass(slots=True)
class _Group:
    """Writes and the replies/waiters that must wait for them."""

    writes: list[Write] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    datagrams: int = 0

    def __bool__(self) -> bool:
        return bool(self.writes or self.replies or self.waiters)


class ServerDriver:
    """Feeds :class:`ServerEngine` from UDP port 67 and commits its writes to a :class:`Store`.

    ``clock`` must be wall-clock seconds (see the module docstring). ``neighbours`` installs
    ARP entries for unicast replies to clients without an address; by default the kernel's
    table through netlink.
    """

    def __init__(
        self,
        engine: ServerEngine,
        store: Store,
        config: DriverConfig | None = None,
        *,
        neighbours: Neighbours | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = store
        self.config = config or DriverConfig()
        self.counters: Counter[str] = Counter()
        self._clock = clock
        self._neighbours = neighbours
        self._listeners: list[_Listener] = []
        self._by_interface: dict[str, _Listener] = {}
        self._names: dict[int, str | None] = {}
        self._sources: dict[str, IPv4Address] = {}
        self._indexes: dict[str, int | None] = {}
        self._pending = _Group()
        self._in_flight: asyncio.Future[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()

    # == life cycle ===================================================================

    async def start(self) -> None:
        """Open the sockets and start receiving."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.config.commit_in_thread:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dhcp-commit")
        try:
            for interface in self.config.interfaces or (None,):
                listener = self._open(interface)
                self._listeners.append(listener)
                if interface is not None:
                    self._by_interface[interface] = listener
                loop.add_reader(listener.sock.fileno(), self._on_readable, listener)
        except BaseException:
            self._close_sockets()
            raise
        self._reschedule_timer()
        self._event(
            Event(
                "server.listening",
                (
                    ("address", self.config.address),
                    ("port", self.bound_port),
                    ("interfaces", list(self.config.interfaces)),
                ),
            )
        )

    @property
    def bound_port(self) -> int:
        port: int = self._listeners[0].sock.getsockname()[1] if self._listeners else self.config.port
        return port

    def _open(self, interface: str | None) -> _Listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.config.receive_buffer)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
            ifindex = None
            if interface is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
                ifindex = interface_index(interface)
            sock.bind((self.config.address, self.config.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return _Listener(sock, interface, ifindex)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def stop(self) -> None:
        """Stop receiving, let the last commit finish (its replies go out), close sockets."""
        loop = self._loop
        if loop is None:
            return
        for listener in self._listeners:
            loop.remove_reader(listener.sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._in_flight is not None or self._pending:
            if self._in_flight is None:
                self._start_commit()
            if self._in_flight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._in_flight)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._neighbours is not None:
            self._neighbours.close()
        self._closed.set()

    def _close_sockets(self) -> None:
        for listener in self._listeners:
            listener.sock.close()
        self._listeners.clear()
        self._by_interface.clear()

    # == management ===================================================================

    async def manage(self, operation: Callable[[float], Outcome]) -> Outcome:
        """Run a management operation (e.g. ``lambda now: engine.put_ce(ce, key, now)``) in the
        loop's thread and return once its writes are durable and its replies are sent."""
        outcome = operation(self._clock())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._absorb(outcome)
        self._pending.waiters.append(waiter)
        self._flush()
        self._reschedule_timer()
        await waiter
        return outcome

    # == receiving ====================================================================

    def _on_readable(self, listener: _Listener) -> None:
        sock = listener.sock
        handle = self.engine.handle
        clock = self._clock
        max_delay = self.config.max_queue_delay
        # Read once per batch: datagrams handled later in the batch only get older.
        oldest = clock() - max_delay if max_delay is not None else None
        for _ in range(self.config.batch_limit):
            try:
                data, ancillary, _flags, source = sock.recvmsg(_MAX_DATAGRAM, ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.counters["receive_error"] += 1
                log.warning("receive error: %s", exc)
                break
            self.counters["datagrams"] += 1
            ifindex, arrived = read_ancillary(ancillary)
            if oldest is not None and arrived is not None and arrived < oldest:
                self.counters["stale"] += 1
                continue
            interface = listener.interface
            if interface is None and ifindex is not None:
                interface = self._name_of(ifindex)
            received = Received(data, self._address_of(source[0]), source[1], interface)
            try:
                outcome = handle(received, clock())
            except Exception:
                self.counters["internal_error"] += 1
                # The traceback, the source and the length: never the payload (it may hold
                # a client's option 90).
                log.exception(
                    "internal error handling a datagram from %s:%d (%d bytes) on %s",
                    source[0],
                    source[1],
                    len(data),
                    interface,
                )
                continue
            self._pending.datagrams += 1
            self._absorb(outcome)
        self._flush()
        self._reschedule_timer()

    def _address_of(self, text: str) -> IPv4Address:
        """The source address as a value; parsing the dotted string cost 7% of the server's CPU
        under perfdhcp, and most traffic comes from a few relays, so parsed values are kept
        (at most 4,096: a flood of new sources costs one clear now and then, never memory)."""
        address = self._sources.get(text)
        if address is None:
            if len(self._sources) >= 4096:
                self._sources.clear()
            address = self._sources[text] = IPv4Address(text)
        return address

    def _name_of(self, ifindex: int) -> str | None:
        try:
            return self._names[ifindex]
        except KeyError:
            name = self._names[ifindex] = interface_name(ifindex)
            return name

    def _index_of(self, name: str) -> int | None:
        try:
            return self._indexes[name]
        except KeyError:
            try:
                index: int | None = interface_index(name)
            except OSError:
                index = None
            self._indexes[name] = index
            return index

    def _absorb(self, outcome: Outcome) -> None:
        if outcome.events and events_log.isEnabledFor(logging.INFO):
            for event in outcome.events:
                self._event(event)
        if outcome.writes:
            self._pending.writes.extend(outcome.writes)
        for reply in outcome.replies:
            if reply.durable:
                self._pending.replies.append(reply)
            else:
                self._send(reply)

    # == group commit =================================================================

    def _flush(self) -> None:
        if self._in_flight is None and self._pending:
            self._start_commit()

    def _start_commit(self) -> None:
        group, self._pending = self._pending, _Group()
        loop = self._loop
        assert loop is not None
        self.counters["commits"] += 1 if group.writes else 0
        if self._executor is None or not group.writes:
            error: BaseException | None = None
            if group.writes:
                try:
                    self.store.commit(group.writes)
                except Exception as exc:
                    error = exc
            self._committed(group, error)
            return
        future = loop.run_in_executor(self._executor, self.store.commit, group.writes)
        self._in_flight = future

        def done(f: asyncio.Future[None]) -> None:
            self._in_flight = None
            self._committed(group, f.exception() if not f.cancelled() else asyncio.CancelledError())
            self._flush()

        future.add_done_callback(done)

    def _committed(self, group: _Group, error: BaseException | None) -> None:
        if error is not None:
            # Nothing of the batch is durable (the store commits all or none): its ACKs and
            # FORCERENEWs are withheld; the clients retransmit and the engine, which already
            # holds the bindings in memory, answers them again and rewrites them.
            self.counters["commit_failed"] += 1
            self.counters["replies_withheld"] += len(group.replies)
            log.error(
                "store commit of %d writes failed, %d replies withheld: %s",
                len(group.writes),
                len(group.replies),
                error,
            )
            for waiter in group.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for reply in group.replies:
            self._send(reply)
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(None)

    # == sending ======================================================================

    def _send(self, reply: Reply) -> None:
        listener = self._by_interface.get(reply.interface) if reply.interface is not None else None
        if listener is None:
            if not self._listeners:
                self.counters["send_error"] += 1
                return
            listener = self._listeners[0]
        ifindex = listener.ifindex
        if ifindex is None and reply.interface is not None:
            ifindex = self._index_of(reply.interface)
        if reply.hardware is None:
            self._transmit(listener, ifindex, reply.payload, reply.destination, reply.port)
        elif ifindex is None:
            self.counters["unicast_fallback_broadcast"] += 1
            self._transmit(listener, ifindex, reply.payload, _BROADCAST, reply.port)
        else:
            # The neighbour entry first (a netlink round trip on the loop), then the datagram.
            task = asyncio.ensure_future(self._send_to_hardware(listener, ifindex, reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_to_hardware(self, listener: _Listener, ifindex: int, reply: Reply) -> None:
        assert reply.hardware is not None
        destination = reply.destination
        try:
            await self._neighbour_table().install(destination, reply.hardware, ifindex)
        except NeighbourError as exc:
            self.counters["unicast_fallback_broadcast"] += 1
            log.warning("%s; broadcasting the reply instead", exc)
            destination = _BROADCAST
        if listener.sock.fileno() != -1:
            self._transmit(listener, ifindex, reply.payload, destination, reply.port)

    def _transmit(
        self, listener: _Listener, ifindex: int | None, payload: bytes, destination: IPv4Address, port: int
    ) -> None:
        address = (str(destination), port)
        try:
            if destination == _BROADCAST and listener.interface is None and ifindex is not None:
                # One socket for all interfaces: IP_PKTINFO picks the way out.
                listener.sock.sendmsg([payload], pack_pktinfo(ifindex), 0, address)
            else:
                listener.sock.sendto(payload, address)
        except OSError as exc:
            self.counters["send_error"] += 1
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                log.warning("sending %d bytes to %s:%d failed: %s", len(payload), *address, exc)
            return
        self.counters["sent"] += 1

    def _neighbour_table(self) -> Neighbours:
        if self._neighbours is None:
            self._neighbours = NeighbourTable()
        return self._neighbours

    # == timers =======================================================================

    def _reschedule_timer(self) -> None:
        loop = self._loop
        if loop is None or not self._listeners:
            return
        now = self._clock()
        due = self.engine.next_timer()
        at = now + _HOUSEKEEPING if due is None else min(due, now + _HOUSEKEEPING)
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= at:
                return  # an earlier (or the same) wake-up is already scheduled
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_later(max(0.0, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            outcome = self.engine.on_timer(self._clock())
        except Exception:
            self.counters["internal_error"] += 1
            log.exception("internal error in the engine's timer")
        else:
            self._absorb(outcome)
            self._flush()
        self._reschedule_timer()

    # == logs =========================================================================

    @staticmethod
    def _event(event: Event) -> None:
        events_log.info("%s", json.dumps(event.as_dict(), default=str, separators=(",", ":")))


# == running a server ======================================================================


@dataclass(frozen=True, slots=True)
class ServerRuntime:
    """Everything ``run_server`` needs: the engine's configuration, the store (``[store]``:
    SQLite or PostgreSQL; ``None``: in memory, for demos and tests) and how to listen."""

    server: ServerConfig
    store: StoreConfig | None
    driver: DriverConfig = field(default_factory=DriverConfig)


def _open_store(config: StoreConfig | None) -> Store:
    return MemoryStore() if config is None else open_store(config)


async def serve(
    runtime: ServerRuntime,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[ServerDriver], None] | None = None,
) -> Counter[str]:
    """Load the store, run the server until ``stop`` is set, return the driver's counters."""
    store = _open_store(runtime.store)
    try:
        engine = ServerEngine(runtime.server, store.load())
        driver = ServerDriver(engine, store, runtime.driver)
        await driver.start()
        try:
            if on_ready is not None:
                on_ready(driver)
            await (stop or asyncio.Event()).wait()
        finally:
            await driver.stop()
        counters = driver.counters + engine.counters
        log.info("%s", json.dumps({"event": "server.stopped", **counters}, separators=(",", ":")))
        return counters
    finally:
        store.close()


def run_server(runtime: ServerRuntime, *, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> int:
    """Run until SIGTERM/SIGINT; the blocking entry point of ``ce-autoconf server run``."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        await serve(runtime, stop=stop)

    asyncio.run(main())
    return 0
