"""The asyncio driver: one UDP socket on port 68 and one timer feed the sans-IO machine.

The socket is bound to 0.0.0.0:68 on one interface (``SO_BINDTODEVICE``) with
``SO_BROADCAST``. On Linux that is enough before the client has an address: it sends from
0.0.0.0 to 255.255.255.255, and with the BROADCAST flag set (RFC 2131 4.1) the server's
OFFER and ACK come back broadcast. Once the address is on the interface, unicast replies
(renewals, INFORM replies, FORCERENEW to the leased address) arrive on the same socket.
Applying the address is the embedder's job or :mod:`dhcp_client.iface`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from dhcp_client.events import ClientEvent
from dhcp_client.machine import ClientMachine, LocalProtocolError, State, Step, Transmit

__all__ = ["ClientDriver", "open_client_socket", "udp_destination"]

_log = logging.getLogger(__name__)
CLIENT_PORT = 68


#: A DHCP client listens on every address of its interface: it has none to start with.
ANY_ADDRESS = "0.0.0.0"  # noqa: S104


def open_client_socket(
    interface: str | None, address: str = ANY_ADDRESS, port: int = CLIENT_PORT
) -> socket.socket:
    """The client's UDP socket; ``interface`` None (tests only) leaves it unbound to a device."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_destination(transmit: Transmit) -> tuple[str, int]:
    """Where a datagram goes: the limited broadcast address, or the server, port 67."""
    return (str(transmit.destination), transmit.port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, driver: ClientDriver) -> None:
        self._driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._driver._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._driver.counters_send_errors += 1
        _log.debug("socket error: %s", exc)


class ClientDriver:
    """Runs a :class:`ClientMachine` on a socket until :meth:`stop` or :meth:`release`.

    ``on_event`` is called for every event, in order; an exception it raises is logged and
    does not stop the client (a vendor hook must not take DHCP down). ``clock`` is wall
    time (the machine's times are Unix seconds, saved across restarts). ``destination`` maps
    a :class:`Transmit` to a UDP address (tests on the loopback interface replace it).
    """

    def __init__(
        self,
        machine: ClientMachine,
        sock: socket.socket,
        on_event: Callable[[ClientEvent], None],
        *,
        clock: Callable[[], float] = time.time,
        destination: Callable[[Transmit], tuple[str, int]] | None = None,
    ) -> None:
        self.machine = machine
        self._sock = sock
        self._on_event = on_event
        self._clock = clock
        self._destination = destination or udp_destination
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None
        self.counters_send_errors = 0

    async def run(self) -> None:
        """Start the machine and serve until stopped; the socket is closed on return."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self._sock)
        self._transport = transport
        try:
            self._apply(self.machine.start(self._clock()))
            await self._done
        finally:
            if self._timer is not None:
                self._timer.cancel()
            transport.close()

    def stop(self) -> None:
        """Stop, keeping the lease for INIT-REBOOT at the next start."""
        self._finish(self.machine.stop)

    def release(self) -> None:
        """Send DHCPRELEASE (when bound) and stop."""
        self._finish(self.machine.release)

    def address_conflict(self) -> None:
        """The embedder's ARP probe found the address in use: DECLINE and start again."""
        self._apply(self.machine.address_conflict(self._clock()))

    def _finish(self, command: Callable[[float], Step]) -> None:
        with contextlib.suppress(LocalProtocolError):  # release while not bound: just stop
            self._apply(command(self._clock()))
        if self.machine.state is not State.STOPPED:
            self._apply(self.machine.stop(self._clock()))
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            source = IPv4Address(str(addr[0]))
        except ValueError:
            return
        self._apply(self.machine.receive_datagram(data, source, self._clock()))

    def _fire(self) -> None:
        self._timer = None
        self._apply(self.machine.handle_timer(self._clock()))

    def _apply(self, step: Step) -> None:
        for transmit in step.send:
            destination = self._destination(transmit)
            try:
                if self._transport is not None:
                    self._transport.sendto(transmit.payload, destination)
            except OSError as exc:  # no route yet, interface down: the retransmission covers it
                self.counters_send_errors += 1
                _log.warning("send to %s failed: %s", destination, exc)
        for event in step.events:
            try:
                self._on_event(event)
            except Exception:
                _log.exception("event handler failed for %s", type(event).__name__)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.machine.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(deadline - self._clock(), 0.0), self._fire)
