"""Optional adapter: apply lease events to the interface with pyroute2.

A CE vendor may configure addresses its own way; this is the small default the
``ce-autoconf client`` command uses. It only ever removes what it added itself (an
address, a default route through the lease's first router), so addresses configured by
someone else on the same interface are left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from ipaddress import IPv4Address
from typing import Any

from dhcp_client.events import ClientEvent, Lease, LeaseBound, LeaseLost, LeaseRenewed

__all__ = ["InterfaceConfigurator"]

_log = logging.getLogger(__name__)


async def _iproute() -> Any:
    # pyroute2's synchronous IPRoute refuses to run inside an event loop: use its asyncio client.
    from pyroute2 import AsyncIPRoute  # noqa: PLC0415 - optional: only this adapter needs netlink

    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


class InterfaceConfigurator:
    """An ``on_event`` hook: LeaseBound/LeaseRenewed add the address, LeaseLost removes it.

    Called from the driver's event loop; the netlink work runs as tasks on that loop, one
    after the other in event order. :meth:`settled` waits for them (tests, shutdown).
    """

    def __init__(
        self,
        interface: str,
        *,
        default_route: bool = True,
        netlink: Callable[[], Awaitable[Any]] = _iproute,
    ) -> None:
        self.interface = interface
        self.default_route = default_route
        self._netlink = netlink
        self._applied: tuple[IPv4Address, int] | None = None
        self._last: asyncio.Task[None] | None = None

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, LeaseBound | LeaseRenewed):
            self._chain(self.apply(event.lease))
        elif isinstance(event, LeaseLost):
            self._chain(self.remove())

    def _chain(self, work: Coroutine[Any, Any, None]) -> None:
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await work
            except Exception:
                _log.exception("configuring %s failed", self.interface)

        self._last = asyncio.get_running_loop().create_task(run())

    async def settled(self) -> None:
        if self._last is not None:
            await asyncio.gather(self._last, return_exceptions=True)

    async def apply(self, lease: Lease) -> None:
        prefix = lease.prefix_length or 32
        ipr = await self._netlink()
        try:
            index = (await ipr.link_lookup(ifname=self.interface))[0]
            if self._applied is not None and self._applied != (lease.address, prefix):
                await self._delete(ipr, index)
            await ipr.addr("replace", index=index, address=str(lease.address), prefixlen=prefix)
            self._applied = (lease.address, prefix)
            if self.default_route and lease.routers:
                await ipr.route("replace", dst="0.0.0.0/0", gateway=str(lease.routers[0]), oif=index)
        finally:
            ipr.close()
        _log.info("configured %s/%d on %s", lease.address, prefix, self.interface)

    async def remove(self) -> None:
        if self._applied is None:
            return
        ipr = await self._netlink()
        try:
            index = (await ipr.link_lookup(ifname=self.interface))[0]
            await self._delete(ipr, index)
        finally:
            ipr.close()

    async def _delete(self, ipr: Any, index: int) -> None:
        assert self._applied is not None
        address, prefix = self._applied
        try:
            await ipr.addr("del", index=index, address=str(address), prefixlen=prefix)
        except Exception as exc:  # already gone (someone else removed it): nothing to undo
            _log.info("address %s was already gone: %s", address, exc)
        self._applied = None  # the kernel drops routes through the removed address's subnet
