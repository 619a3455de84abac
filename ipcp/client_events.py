"""The PPP CE's events as the DHCP client's: one stream of peer events for ``ce_runtime``.

``ce_runtime`` (and a vendor's embedding) consumes :mod:`dhcp_client.events`: ``LeaseBound`` /
``LeaseRenewed`` / ``LeaseLost`` for the CE's own address and ``VpnPeersChanged`` per VPN. A CE
reached over PPP learns the same things through IPCP; :class:`PppClientEvents` turns the CE
session's events into those values, so the runtime does not care how the CE was provisioned.

Mapping:

- ``AddressLearned`` -> ``LeaseBound`` with an infinite lease (a PPP address lasts as long as the
  link), ``server_id`` the NAS's address (0.0.0.0 if it never told us), the DNS servers learned
  with it (the CE reports ``DnsLearned`` first). A different address later: ``LeaseLost(old,
  "renumbered")`` then ``LeaseBound(new)``.
- ``DnsLearned`` while an address is held -> ``LeaseRenewed`` with the new servers.
- ``VpnPeersChanged`` -> ``dhcp_client.events.VpnPeersChanged`` field for field (``member`` too).
- LCP going down (hang-up, terminate, dead peer) -> ``VpnPeersChanged(member=False)`` for every
  VPN held, then ``LeaseLost(address, "link-down")``; the next IPCP opening binds again.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Final

from dhcp_client.events import (
    INFINITE_LEASE,
    ClientEvent,
    Lease,
    LeaseBound,
    LeaseLost,
    LeaseRenewed,
)
from dhcp_client.events import VpnPeersChanged as ClientVpnPeersChanged
from ipcp.events import AddressLearned, DnsLearned, LayerDown, PppEvent, VpnPeersChanged
from ipcp.frame import Protocol

__all__ = ["PppClientEvents"]

_NO_SERVER: Final = IPv4Address(0)


class PppClientEvents:
    """Feed every event of a CE :class:`~ipcp.session.PppSession` in order; get client events back."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.peers: dict[int, frozenset[IPv4Address]] = {}
        self._dns: tuple[IPv4Address, ...] = ()

    def feed(self, event: PppEvent, now: float) -> list[ClientEvent]:
        out: list[ClientEvent] = []
        if isinstance(event, DnsLearned):
            self._dns = tuple(a for a in (event.primary, event.secondary) if a is not None)
            if self.lease is not None and self.lease.dns_servers != self._dns:
                self.lease = replace(self.lease, dns_servers=self._dns)
                out.append(LeaseRenewed(self.lease))
        elif isinstance(event, AddressLearned):
            if self.lease is not None and self.lease.address != event.local:
                out.append(LeaseLost(self.lease.address, "renumbered"))
            self.lease = Lease(
                address=event.local,
                server_id=event.peer or _NO_SERVER,
                acquired=now,
                lease_time=INFINITE_LEASE,
                renewal_time=INFINITE_LEASE,
                rebinding_time=INFINITE_LEASE,
                dns_servers=self._dns,
            )
            out.append(LeaseBound(self.lease))
        elif isinstance(event, VpnPeersChanged):
            if event.member:
                self.peers[event.vpn_id] = event.peers
            else:
                self.peers.pop(event.vpn_id, None)
            out.append(
                ClientVpnPeersChanged(event.vpn_id, event.added, event.removed, event.peers, event.member)
            )
        elif event == LayerDown(Protocol.LCP):
            for vpn_id, peers in sorted(self.peers.items()):
                out.append(ClientVpnPeersChanged(vpn_id, frozenset(), peers, frozenset(), member=False))
            self.peers.clear()
            if self.lease is not None:
                out.append(LeaseLost(self.lease.address, "link-down"))
            self.lease = None
            self._dns = ()
        return out
