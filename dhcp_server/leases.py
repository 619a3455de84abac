"""The lease table and address allocation, in memory, with time passed in.

RFC 2131 4.3.1 fixes the order in which an address is chosen for a client: its current
binding, then its previous one, then the requested address, then a free one from the
pool. Offers hold an address for a short while without being written anywhere (an
OFFER is not a promise the server must survive); bindings are what the store keeps.
Addresses are handled as integers here: this is the server's hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from dhcp_server.model import ClientKey, Lease, LeaseState, ServerConfig, SubnetConfig

__all__ = ["LeaseTable"]


def _in(ranges: tuple[tuple[int, int], ...], address: int) -> bool:
    for first, last in ranges:  # noqa: SIM110 - a plain loop: no generator on the allocation path
        if first <= address <= last:
            return True
    return False


@dataclass(slots=True)
class _Hold:
    client: ClientKey
    until: float


class LeaseTable:
    __slots__ = (
        "_by_address",
        "_by_client",
        "_config",
        "_cursor",
        "_declined",
        "_offer_of",
        "_offers",
        "_pools",
        "_reserved",
    )

    def __init__(self, config: ServerConfig, leases: Iterable[Lease] = ()) -> None:
        self._config = config
        self._by_address: dict[int, Lease] = {}
        self._by_client: dict[ClientKey, int] = {}
        self._offers: dict[int, _Hold] = {}
        self._offer_of: dict[ClientKey, int] = {}
        self._declined: dict[int, float] = {}
        self._cursor: dict[int, int] = {}
        self._reserved: dict[int, ClientKey] = {}
        # Per subnet (keyed by its network address as an integer): the pool ranges as
        # integers and their total size, so allocation never builds IPv4Address objects.
        self._pools: dict[int, tuple[tuple[tuple[int, int], ...], int]] = {}
        for subnet in config.subnets:
            ranges = tuple((int(p.first), int(p.last)) for p in subnet.pools)
            self._pools[int(subnet.network.network_address)] = (ranges, sum(b - a + 1 for a, b in ranges))
        for subnet in config.subnets:
            for r in subnet.reservations:
                self._reserved[int(r.address)] = r.client
        for lease in leases:
            self._store(lease)

    def _store(self, lease: Lease) -> None:
        address = int(lease.address)
        old = self._by_address.get(address)
        if old is not None and old.client != lease.client and self._by_client.get(old.client) == address:
            del self._by_client[old.client]
        self._by_address[address] = lease
        if lease.state is LeaseState.DECLINED:
            self._by_client.pop(lease.client, None)
        else:
            self._by_client[lease.client] = address

    # -- queries -------------------------------------------------------------------

    def lease_at(self, address: IPv4Address) -> Lease | None:
        return self._by_address.get(int(address))

    def lease_of(self, client: ClientKey) -> Lease | None:
        """The client's latest binding, active or not."""
        address = self._by_client.get(client)
        return None if address is None else self._by_address.get(address)

    def active_lease_of(self, client: ClientKey, now: float) -> Lease | None:
        lease = self.lease_of(client)
        return lease if lease is not None and lease.active(now) else None

    def leases(self) -> list[Lease]:
        return list(self._by_address.values())

    def offered_to(self, client: ClientKey, now: float) -> IPv4Address | None:
        address = self._offer_of.get(client)
        if address is None:
            return None
        hold = self._offers.get(address)
        return (
            IPv4Address(address) if hold is not None and hold.client == client and hold.until > now else None
        )

    def free_for(self, address: int, client: ClientKey, now: float) -> bool:
        """May ``address`` go to ``client`` now? (Not bound, offered or reserved to another, not declined.)"""
        reserved = self._reserved.get(address)
        if reserved is not None and reserved != client:
            return False
        lease = self._by_address.get(address)
        if lease is not None and lease.client != client and lease.active(now):
            return False
        hold = self._offers.get(address)
        if hold is not None and hold.client != client and hold.until > now:
            return False
        until = self._declined.get(address)
        return until is None or until <= now

    # -- allocation ------------------------------------------------------------------

    def choose(
        self, subnet: SubnetConfig, client: ClientKey, requested: IPv4Address | None, now: float
    ) -> IPv4Address | None:
        """The address to offer ``client`` on ``subnet`` (RFC 2131 4.3.1), or None when the pool is full."""
        for r in subnet.reservations:
            if r.client == client:
                return r.address if self.free_for(int(r.address), client, now) else None
        ranges, total = self._pools[int(subnet.network.network_address)]
        known = self._by_client.get(client)
        if known is not None and _in(ranges, known) and self.free_for(known, client, now):
            return IPv4Address(known)
        held = self.offered_to(client, now)
        if held is not None and _in(ranges, int(held)):
            return held
        if requested is not None:
            value = int(requested)
            if _in(ranges, value) and self.free_for(value, client, now):
                return requested
        return self._scan(int(subnet.network.network_address), ranges, total, client, now)

    def in_pool(self, subnet: SubnetConfig, address: IPv4Address) -> bool:
        return _in(self._pools[int(subnet.network.network_address)][0], int(address))

    def _scan(
        self, key: int, ranges: tuple[tuple[int, int], ...], total: int, client: ClientKey, now: float
    ) -> IPv4Address | None:
        # A rotating cursor: allocations walk the pool instead of probing from its start,
        # so handing out n addresses costs O(n), and a just-released address is the last
        # to be reused (good for clients that come back).
        start = self._cursor.get(key, 0) % total
        for step in range(total):
            index = (start + step) % total
            address = -1
            for first, last in ranges:
                size = last - first + 1
                if index < size:
                    address = first + index
                    break
                index -= size
            if address not in self._reserved and self.free_for(address, client, now):
                self._cursor[key] = (start + step + 1) % total
                return IPv4Address(address)
        return None

    # -- changes -----------------------------------------------------------------------

    def hold_offer(self, address: IPv4Address, client: ClientKey, until: float) -> None:
        self.drop_offer(client)
        value = int(address)
        self._offers[value] = _Hold(client, until)
        self._offer_of[client] = value

    def drop_offer(self, client: ClientKey) -> None:
        address = self._offer_of.pop(client, None)
        if address is not None:
            hold = self._offers.get(address)
            if hold is not None and hold.client == client:
                del self._offers[address]

    def expire_offers(self, now: float) -> None:
        for address, hold in list(self._offers.items()):
            if hold.until <= now:
                del self._offers[address]
                if self._offer_of.get(hold.client) == address:
                    del self._offer_of[hold.client]

    def bind(self, lease: Lease) -> None:
        self.drop_offer(lease.client)
        hold = self._offers.get(int(lease.address))
        if hold is not None:  # another client's stale offer of the same address
            del self._offers[int(lease.address)]
            self._offer_of.pop(hold.client, None)
        self._declined.pop(int(lease.address), None)
        self._store(lease)

    def decline(self, lease: Lease, until: float) -> None:
        """RFC 2131 4.3.3: the address is in use by someone else; keep it out of the pool."""
        self._declined[int(lease.address)] = until
        self._store(lease)
