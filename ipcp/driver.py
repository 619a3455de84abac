"""The asyncio driver: a :class:`PppSession` on a pty or serial-port file descriptor.

All protocol work happens in the sans-IO session; this module only moves bytes, reads the loop's
clock and keeps one timer armed. A pty is put in raw mode with ``TCSANOW`` -- ``TCSAFLUSH`` would
drop frames the peer already queued (observed with pppd, ``docs/ppp.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
import tty
from collections.abc import Callable

from ipcp.events import LayerFinished, PppEvent
from ipcp.frame import Protocol
from ipcp.session import PppSession

__all__ = ["make_raw", "run_ppp"]

_READ_SIZE = 4096


def make_raw(fd: int) -> None:
    """Raw 8-bit mode, no echo, no line discipline, applied at once (TCSANOW)."""
    if os.isatty(fd):
        tty.setraw(fd, termios.TCSANOW)


async def run_ppp(
    session: PppSession,
    fd: int,
    on_event: Callable[[PppEvent], None],
    *,
    stop: asyncio.Event | None = None,
    outgoing: asyncio.Queue[bytes] | None = None,
    actions: asyncio.Queue[Callable[[PppSession, float], None]] | None = None,
    raw: bool = True,
) -> None:
    """Run ``session`` on ``fd`` until LCP finishes or the line goes away.

    ``on_event`` gets every event in order (it must not block); it may call
    ``session.send_datagram`` and what it queues goes out at once. Setting ``stop`` closes the link
    cleanly: LCP Terminate-Request, and the call returns once the peer acknowledged or Max-Terminate
    ran out. IPv4 datagrams put on ``outgoing`` are sent while IPCP is Opened and dropped otherwise
    (as a PPP interface without a route drops them). Callables put on ``actions`` are called with the
    session and the loop's time, and what they cause is sent at once -- a NAS pushes new VPN peers with
    ``actions.put_nowait(lambda s, now: s.renegotiate_ipcp(now))``. The caller owns ``fd`` and closes
    it afterwards.
    """
    loop = asyncio.get_running_loop()
    if raw:
        make_raw(fd)
    os.set_blocking(fd, False)
    finished = asyncio.Event()
    pending = bytearray()
    timer: asyncio.TimerHandle | None = None
    writing = False

    def write_pending() -> None:
        nonlocal writing
        while pending:
            try:
                written = os.write(fd, pending)
            except BlockingIOError:
                break
            except OSError:
                pending.clear()
                line_gone()
                return
            del pending[:written]
        if pending and not writing:
            loop.add_writer(fd, write_pending)
            writing = True
        elif not pending and writing:
            loop.remove_writer(fd)
            writing = False

    def after_step() -> None:
        nonlocal timer
        pending.extend(session.data_to_send())
        if pending:
            write_pending()
        for event in session.next_events():
            on_event(event)
            if isinstance(event, LayerFinished) and event.protocol == Protocol.LCP:
                finished.set()
        pending.extend(session.data_to_send())  # what on_event queued (datagrams)
        if pending:
            write_pending()
        if timer is not None:
            timer.cancel()
            timer = None
        deadline = session.get_timer()
        if deadline is not None and not finished.is_set():
            timer = loop.call_at(deadline, on_timer)

    def on_timer() -> None:
        session.handle_timer(loop.time())
        after_step()

    def line_gone() -> None:
        session.line_down(loop.time())
        after_step()
        finished.set()

    def on_readable() -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.EIO:  # EIO: the other end of a pty was closed
                raise
            data = b""
        if not data:
            loop.remove_reader(fd)
            line_gone()
            return
        session.receive_data(data, loop.time())
        after_step()

    async def watch_stop() -> None:
        assert stop is not None
        await stop.wait()
        session.close(loop.time())
        after_step()

    async def watch_outgoing() -> None:
        assert outgoing is not None
        while True:
            datagram = await outgoing.get()
            session.send_datagram(datagram)
            after_step()

    async def watch_actions() -> None:
        assert actions is not None
        while True:
            action = await actions.get()
            action(session, loop.time())
            after_step()

    loop.add_reader(fd, on_readable)
    helpers = []
    if actions is not None:
        helpers.append(asyncio.ensure_future(watch_actions()))
    if stop is not None:
        helpers.append(asyncio.ensure_future(watch_stop()))
    if outgoing is not None:
        helpers.append(asyncio.ensure_future(watch_outgoing()))
    try:
        session.start(loop.time())
        after_step()
        await finished.wait()
        pending.extend(session.data_to_send())
        write_pending()  # the last Terminate-Ack, best effort
    finally:
        for helper in helpers:
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await helper
        if timer is not None:
            timer.cancel()
        loop.remove_reader(fd)
        if writing:
            loop.remove_writer(fd)
