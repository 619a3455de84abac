"""The addresses a NAS hands to CEs, one per link, taken back when the link goes down."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

__all__ = ["AddressPool", "PoolExhaustedError"]


class PoolExhaustedError(RuntimeError):
    """Every address of the pool is held by a link: refuse the new link."""


class AddressPool:
    """A range of CE addresses shared by a NAS's links.

    A link keeps its address while it holds it (a renegotiation gets the same one); a
    released address goes to the back of the queue, so it is the last to be reused.
    """

    __slots__ = ("_free", "_held")

    def __init__(self, first: IPv4Address, last: IPv4Address, *, exclude: Iterable[IPv4Address] = ()) -> None:
        if int(last) < int(first):
            raise ValueError(f"pool {first}-{last} is empty")
        excluded = {int(a) for a in exclude}
        self._free = [IPv4Address(a) for a in range(int(first), int(last) + 1) if a not in excluded]
        self._held: dict[str, IPv4Address] = {}

    def allocate(self, link: str) -> IPv4Address:
        held = self._held.get(link)
        if held is not None:
            return held
        if not self._free:
            raise PoolExhaustedError(
                f"no address left for link {link!r}: {len(self._held)} links hold them all"
            )
        address = self._free.pop(0)
        self._held[link] = address
        return address

    def release(self, link: str) -> None:
        address = self._held.pop(link, None)
        if address is not None:
            self._free.append(address)

    def held(self) -> dict[str, IPv4Address]:
        return dict(self._held)

    def __len__(self) -> int:
        """Addresses still free."""
        return len(self._free)
