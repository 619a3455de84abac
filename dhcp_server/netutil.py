"""Kernel helpers the driver needs: interface names and indexes, IP_PKTINFO, SO_TIMESTAMP, neighbours.

Only the neighbour table is reached over netlink (pyroute2); everything else is a socket
option or ``if_nametoindex``. Nothing here touches an interface or a neighbour entry the
server did not ask for: :class:`NeighbourTable` replaces only the entry of the client it
is about to answer.
"""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address
from typing import Any, Final, Protocol

__all__ = [
    "ANCILLARY_SPACE",
    "IP_PKTINFO",
    "SO_BINDTODEVICE",
    "SO_TIMESTAMP",
    "NeighbourError",
    "NeighbourTable",
    "Neighbours",
    "interface_index",
    "interface_name",
    "pack_pktinfo",
    "read_ancillary",
]

#: Linux values (<linux/in.h>, <asm-generic/socket.h>); the socket module lacks the first.
IP_PKTINFO: Final = getattr(socket, "IP_PKTINFO", 8)
SO_BINDTODEVICE: Final = getattr(socket, "SO_BINDTODEVICE", 25)
_PKTINFO: Final = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO_SPACE: Final = socket.CMSG_SPACE(_PKTINFO.size)
#: SO_TIMESTAMP: the kernel stamps each datagram with its arrival (SCM_TIMESTAMP, a timeval).
SO_TIMESTAMP: Final = getattr(socket, "SO_TIMESTAMP", 29)
_TIMEVAL: Final = struct.Struct("=qq")
#: recvmsg's ancillary buffer for both IP_PKTINFO and SCM_TIMESTAMP.
ANCILLARY_SPACE: Final = _PKTINFO_SPACE + socket.CMSG_SPACE(_TIMEVAL.size)
#: NUD_REACHABLE: the kernel uses the entry at once and ages it out like a learned one.
_NUD_REACHABLE: Final = 0x02


def read_ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, float | None]:
    """The receiving interface's index (IP_PKTINFO) and the kernel's arrival time (SCM_TIMESTAMP,
    seconds since the epoch), each ``None`` when absent."""
    ifindex: int | None = None
    arrived: float | None = None
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            ifindex = _PKTINFO.unpack_from(data)[0]
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(data) >= _TIMEVAL.size:
            seconds, micros = _TIMEVAL.unpack_from(data)
            arrived = seconds + micros * 1e-6
    return ifindex, arrived


def pack_pktinfo(ifindex: int) -> list[tuple[int, int, bytes]]:
    """Ancillary data for ``sendmsg`` that sends out of ``ifindex`` (the route lookup uses it as
    the output interface, which is what a limited broadcast needs)."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO.pack(ifindex, bytes(4), bytes(4)))]


def interface_index(name: str) -> int:
    """``if_nametoindex``; raises OSError if there is no such interface."""
    return socket.if_nametoindex(name)


def interface_name(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


class NeighbourError(Exception):
    """The kernel refused a neighbour entry."""


class Neighbours(Protocol):
    """What the driver needs of the neighbour table (an injected port, so tests can count calls)."""

    async def install(self, address: IPv4Address, lladdr: bytes, ifindex: int) -> None: ...

    def close(self) -> None: ...


class NeighbourTable:
    """Installs neighbour entries so a reply can be unicast to a client without an address.

    RFC 2131 4.1: a reply to a client whose broadcast bit is clear goes to ``yiaddr`` at
    ``chaddr``; the client cannot answer ARP yet, so the entry is installed first. Uses
    pyroute2's asyncio netlink client on the caller's running loop (its synchronous
    ``IPRoute`` refuses to run inside one); the netlink socket is opened on first use, in
    the network namespace of the loop's thread. Entries installed in the last ``refresh``
    seconds for the same address and hardware address are not sent again (a netlink round
    trip per OFFER/ACK would dominate a burst).
    """

    def __init__(self, refresh: float = 30.0, max_remembered: int = 65536) -> None:
        self._ipr: Any = None
        self._refresh = refresh
        self._max = max_remembered
        self._recent: dict[tuple[int, IPv4Address], tuple[bytes, float]] = {}

    async def install(self, address: IPv4Address, lladdr: bytes, ifindex: int) -> None:
        key = (ifindex, address)
        now = time.monotonic()
        seen = self._recent.get(key)
        if seen is not None and seen[0] == lladdr and now - seen[1] < self._refresh:
            return
        try:
            if self._ipr is None:
                from pyroute2 import AsyncIPRoute  # noqa: PLC0415 - netlink only when it is used

                ipr = AsyncIPRoute()
                await ipr.setup_endpoint()
                self._ipr = ipr
            await self._ipr.neigh(
                "replace", dst=str(address), lladdr=lladdr.hex(":"), ifindex=ifindex, state=_NUD_REACHABLE
            )
        except Exception as exc:  # pyroute2 raises NetlinkError, OSError or ValueError
            self._recent.pop(key, None)
            raise NeighbourError(f"neighbour {address} on ifindex {ifindex}: {exc}") from exc
        if len(self._recent) >= self._max:
            self._recent.clear()
        self._recent[key] = (lladdr, now)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
