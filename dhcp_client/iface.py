"""Optional adapter: apply lease events to the interface with pyroute2.

A CE vendor may configure addresses its own way; this is the small default the
``ce-autoconf client`` command uses. It only ever removes what it added itself (an
address, a default route through the lease's first router), so addresses configured by
someone else on the same interface are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from dhcp_client.events import ClientEvent, Lease, LeaseBound, LeaseLost, LeaseRenewed

__all__ = ["InterfaceConfigurator"]

_log = logging.getLogger(__name__)


def _iproute() -> Any:
    from pyroute2 import IPRoute  # noqa: PLC0415 - optional: only this adapter needs netlink

    return IPRoute()


class InterfaceConfigurator:
    """An ``on_event`` hook: LeaseBound/LeaseRenewed add the address, LeaseLost removes it."""

    def __init__(
        self, interface: str, *, default_route: bool = True, netlink: Callable[[], Any] = _iproute
    ) -> None:
        self.interface = interface
        self.default_route = default_route
        self._netlink = netlink
        self._applied: tuple[IPv4Address, int] | None = None
        self._route: IPv4Address | None = None

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, LeaseBound | LeaseRenewed):
            self.apply(event.lease)
        elif isinstance(event, LeaseLost):
            self.remove()

    def apply(self, lease: Lease) -> None:
        prefix = lease.prefix_length or 32
        with _Netlink(self._netlink()) as ipr:
            index = ipr.link_lookup(ifname=self.interface)[0]
            if self._applied is not None and self._applied != (lease.address, prefix):
                self._delete(ipr, index)
            ipr.addr("replace", index=index, address=str(lease.address), prefixlen=prefix)
            self._applied = (lease.address, prefix)
            if self.default_route and lease.routers:
                ipr.route("replace", dst="0.0.0.0/0", gateway=str(lease.routers[0]), oif=index)
                self._route = lease.routers[0]
        _log.info("configured %s/%d on %s", lease.address, prefix, self.interface)

    def remove(self) -> None:
        if self._applied is None:
            return
        with _Netlink(self._netlink()) as ipr:
            index = ipr.link_lookup(ifname=self.interface)[0]
            self._delete(ipr, index)

    def _delete(self, ipr: Any, index: int) -> None:
        assert self._applied is not None
        address, prefix = self._applied
        try:
            ipr.addr("del", index=index, address=str(address), prefixlen=prefix)
        except Exception as exc:  # already gone (someone else removed it): nothing to undo
            _log.info("address %s was already gone: %s", address, exc)
        self._applied = None
        self._route = None  # the kernel drops routes through a removed address's subnet


class _Netlink:
    """A netlink socket closed on exit (pyroute2's objects are not typed context managers)."""

    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr

    def __enter__(self) -> Any:
        return self.ipr

    def __exit__(self, *exc: object) -> None:
        self.ipr.close()
