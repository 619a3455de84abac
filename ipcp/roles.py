"""IPCP option policies for the two roles: the CE (learns) and the NAS (assigns).

How values travel (RFC 1332, RFC 1877, and VPN-IP-Addresses as decided in ``docs/ppp.md``):

* The CE asks IP-Address 0.0.0.0, Primary/Secondary-DNS 0.0.0.0 and VPN-IP-Addresses with VPN-ID 0
  and no addresses; the NAS Naks each with the real values -- for VPNs, all the options describing
  the CE's membership in place of the one asked (RFC 1661 5.3 lets an option that can be listed more
  than once be Nak'd with every acceptable value). The CE requests exactly what it was given, the
  NAS acks, and at This-Layer-Up the CE reports what changed.
* An option the NAS rejects is dropped from the CE's next request; IPCP opens without it.
* The CE acknowledges the NAS's own IP-Address (3) and the old IP-Addresses (1): pppd switches to
  type 1 when a peer uses it, and refusing it makes IPCP fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from ipcp.engine import ACK, REJECT, Received, Verdict, VerdictKind
from ipcp.events import (
    AddressLearned,
    DnsLearned,
    PeerConfigured,
    PppEvent,
    VpnOptionRejected,
    VpnPeersChanged,
    VpnPeersLearned,
)
from ipcp.ipcp_options import ipcp_registry
from ipcp.option import Option, OptionRegistry, RawOption
from ipcp.pool import AddressPool
from ipcp.rfc1332 import IpAddress, IpAddresses
from ipcp.rfc1877 import PrimaryDns, SecondaryDns
from ipcp.vpn_option import (
    DEFAULT_VPN_OPTION_TYPE,
    VPN_ID_NONE,
    VpnIpAddresses,
    apply_vpn_options,
    vpn_options_for,
)

__all__ = ["CeIpcpPolicy", "NasConfig", "NasIpcpPolicy", "VpnPeerProvider"]

_UNSPECIFIED: Final = IPv4Address(0)

VpnPeerProvider = Callable[[IPv4Address], Mapping[int, Sequence[IPv4Address]]]
"""NAS side: CE address -> {VPN-ID: peer CE addresses}. The DHCP server's VPN database plugs in here."""


def _vpn_tuple(vpns: Mapping[int, frozenset[IPv4Address]]) -> tuple[tuple[int, frozenset[IPv4Address]], ...]:
    return tuple(sorted(vpns.items(), key=lambda item: item[0]))


class CeIpcpPolicy:
    """The customer edge: asks for an address, name servers and its VPN peers, and learns them."""

    def __init__(
        self,
        *,
        address: IPv4Address = _UNSPECIFIED,
        request_dns: bool = True,
        request_vpn: bool = True,
        vpn_option_type: int = DEFAULT_VPN_OPTION_TYPE,
    ) -> None:
        self._registry = ipcp_registry(vpn_option_type)
        self._vpn_type = vpn_option_type
        self._address = address
        self._want_address = True
        self._address_type = IpAddress.TYPE  # falls back to IpAddresses.TYPE if the NAS rejects it
        self._nas_hint = _UNSPECIFIED  # the NAS's address from a Nak of IP-Addresses (type 1)
        self._dns: list[IPv4Address | None] = [_UNSPECIFIED, _UNSPECIFIED] if request_dns else [None, None]
        self._vpn: tuple[VpnIpAddresses, ...] | None = (
            (VpnIpAddresses(VPN_ID_NONE, option_type=vpn_option_type),) if request_vpn else None
        )
        self._acked: tuple[Option, ...] = ()
        self._peer_address: IPv4Address | None = None
        self._vpn_rejected_reported = False
        self._vpn_reported = False
        # what the user was last told, to report changes only
        self.address: IPv4Address | None = None
        self.peer_address: IPv4Address | None = None
        self.dns: tuple[IPv4Address | None, IPv4Address | None] = (None, None)
        self.vpns: dict[int, frozenset[IPv4Address]] = {}

    @property
    def registry(self) -> OptionRegistry:
        return self._registry

    def request_options(self) -> tuple[Option, ...]:
        options: list[Option] = []
        if self._want_address and self._address_type == IpAddress.TYPE:
            options.append(IpAddress(self._address))
        elif self._want_address:
            options.append(IpAddresses(self._address, self._nas_hint))
        if self._dns[0] is not None:
            options.append(PrimaryDns(self._dns[0]))
        if self._dns[1] is not None:
            options.append(SecondaryDns(self._dns[1]))
        if self._vpn is not None:
            options.extend(self._vpn)
        return tuple(options)

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        """The NAS's own request: its address (type 3 or the old type 1) is fine; nothing else is."""
        verdicts: list[Verdict] = []
        for option in options:
            nas_address = (
                option.address
                if isinstance(option, IpAddress)
                else option.source
                if isinstance(option, IpAddresses)
                else _UNSPECIFIED
            )
            # Anything else -- VJ compression, name servers, VPN, unknown, malformed -- is refused.
            verdicts.append(ACK if nas_address != _UNSPECIFIED else REJECT)
        return verdicts

    def nak_additions(self, options: Sequence[Received]) -> tuple[Option, ...]:
        return ()  # the NAS need not tell us its address

    def peer_acked(self, options: Sequence[Option]) -> None:
        for option in options:
            if isinstance(option, IpAddress):
                self._peer_address = option.address
            elif isinstance(option, IpAddresses):
                self._peer_address = option.source
                if self._address == _UNSPECIFIED and option.destination != _UNSPECIFIED:
                    self._address = option.destination

    def our_acked(self, options: Sequence[Option]) -> None:
        self._acked = tuple(options)

    def our_naked(self, options: Sequence[Received]) -> None:
        vpn: list[VpnIpAddresses] = []
        for option in options:
            if isinstance(option, IpAddress) and option.address != _UNSPECIFIED:
                self._address = option.address
            elif isinstance(option, IpAddresses) and option.source != _UNSPECIFIED:
                self._address, self._nas_hint = option.source, option.destination
            elif isinstance(option, PrimaryDns) and self._dns[0] is not None:
                self._dns[0] = option.address
            elif isinstance(option, SecondaryDns) and self._dns[1] is not None:
                self._dns[1] = option.address
            elif isinstance(option, VpnIpAddresses) and option.option_type == self._vpn_type:
                vpn.append(option)
        if vpn and self._vpn is not None:
            self._vpn = tuple(vpn)

    def our_rejected(self, options: Sequence[RawOption]) -> None:
        for raw in options:
            if raw.option_type == IpAddress.TYPE and self._address_type == IpAddress.TYPE:
                # A NAS from before RFC 1332 knows only IP-Addresses (RFC 1172): ask that way.
                self._address_type = IpAddresses.TYPE
            elif raw.option_type in (IpAddress.TYPE, IpAddresses.TYPE):
                self._want_address = False
            elif raw.option_type == PrimaryDns.TYPE:
                self._dns[0] = None
            elif raw.option_type == SecondaryDns.TYPE:
                self._dns[1] = None
            elif raw.option_type == self._vpn_type:
                self._vpn = None

    def layer_up(self) -> list[PppEvent]:
        events: list[PppEvent] = []
        acked = self._acked
        primary = next((o.address for o in acked if isinstance(o, PrimaryDns)), None)
        secondary = next((o.address for o in acked if isinstance(o, SecondaryDns)), None)
        if (primary, secondary) != self.dns:
            self.dns = (primary, secondary)
            events.append(DnsLearned(primary, secondary))
        address = next((o.address for o in acked if isinstance(o, IpAddress)), None)
        pair = next((o for o in acked if isinstance(o, IpAddresses)), None)
        if pair is not None:
            address = pair.source
            if self._peer_address is None and pair.destination != _UNSPECIFIED:
                self._peer_address = pair.destination
        if address is None and self._address != _UNSPECIFIED:
            address = self._address  # given by the NAS's IP-Addresses (type 1) request
        if address is not None and (address, self._peer_address) != (self.address, self.peer_address):
            self.address, self.peer_address = address, self._peer_address
            events.append(AddressLearned(address, self._peer_address))
        if self._vpn is None:
            if not self._vpn_rejected_reported:
                self._vpn_rejected_reported = True
                events.append(VpnOptionRejected())
            return events
        vpns = apply_vpn_options(o for o in acked if isinstance(o, VpnIpAddresses))
        changes = []
        for vpn_id in sorted(set(vpns) | set(self.vpns)):
            old, new = self.vpns.get(vpn_id, frozenset()), vpns.get(vpn_id, frozenset())
            if old != new or (vpn_id in vpns) != (vpn_id in self.vpns):
                changes.append(VpnPeersChanged(vpn_id, new - old, old - new, new, vpn_id in vpns))
        if changes or not self._vpn_reported:
            self._vpn_reported = True
            self.vpns = vpns
            events.extend(changes)
            events.append(VpnPeersLearned(_vpn_tuple(vpns)))
        return events

    def layer_down(self) -> list[PppEvent]:
        return []  # keep what was learned: renegotiation reports differences, not a flap

    def link_down(self) -> None:
        """The link is gone: the next IPCP opening reports everything again, as new."""
        self.address = self.peer_address = None
        self.dns = (None, None)
        self.vpns = {}
        self._vpn_reported = False


@dataclass(frozen=True, slots=True)
class NasConfig:
    """One link's NAS side: our address, the CE's, name servers to hand out, and where VPN peers come from.

    The CE's address is either fixed (``peer_address``) or taken from a ``pool`` shared by
    the NAS's links, under the name ``link``. ``vpn_peers=None`` makes this NAS reject
    VPN-IP-Addresses, like a NAS that does not know it.
    """

    local_address: IPv4Address
    peer_address: IPv4Address | None = None
    primary_dns: IPv4Address | None = None
    secondary_dns: IPv4Address | None = None
    vpn_peers: VpnPeerProvider | None = None
    vpn_option_type: int = DEFAULT_VPN_OPTION_TYPE
    pool: AddressPool | None = None
    link: str = "ppp0"

    def __post_init__(self) -> None:
        if (self.peer_address is None) == (self.pool is None):
            raise ValueError("give the CE's address either fixed (peer_address) or from a pool, not both")


class NasIpcpPolicy:
    """The network access server: assigns the CE's address, answers DNS, offers VPN peers by Nak."""

    def __init__(self, config: NasConfig) -> None:
        self.config = config
        self._ce: IPv4Address | None = config.peer_address
        self._registry = ipcp_registry(config.vpn_option_type if config.vpn_peers is not None else None)
        self._given_vpns: tuple[tuple[int, frozenset[IPv4Address]], ...] = ()
        self._address_appended = False

    @property
    def registry(self) -> OptionRegistry:
        return self._registry

    def request_options(self) -> tuple[Option, ...]:
        return (IpAddress(self.config.local_address),)

    @property
    def ce_address(self) -> IPv4Address:
        """The address this link's CE gets: fixed, or held from the pool until the link goes down.

        Raises :class:`PoolExhaustedError` when the pool has none left.
        """
        if self._ce is None:
            assert self.config.pool is not None
            self._ce = self.config.pool.allocate(self.config.link)
        return self._ce

    def _expected_vpn(self) -> tuple[VpnIpAddresses, ...]:
        assert self.config.vpn_peers is not None
        peers = self.config.vpn_peers(self.ce_address)
        return vpn_options_for(peers, self.config.vpn_option_type)

    def review(self, options: Sequence[Received]) -> list[Verdict]:
        cfg = self.config
        ce = self.ce_address
        verdicts: list[Verdict] = []
        vpn_asked = [o for o in options if isinstance(o, VpnIpAddresses)]
        vpn_expected = self._expected_vpn() if vpn_asked else ()
        vpn_first = True
        for option in options:
            if isinstance(option, IpAddress):
                ok = option.address == ce
                verdicts.append(ACK if ok else Verdict(VerdictKind.NAK, (IpAddress(ce),)))
            elif isinstance(option, IpAddresses):
                ok = option.source == ce
                nak = IpAddresses(ce, cfg.local_address)
                verdicts.append(ACK if ok else Verdict(VerdictKind.NAK, (nak,)))
            elif isinstance(option, PrimaryDns | SecondaryDns):
                mine = cfg.primary_dns if isinstance(option, PrimaryDns) else cfg.secondary_dns
                if mine is None:
                    verdicts.append(REJECT)
                else:
                    verdicts.append(
                        ACK if option.address == mine else Verdict(VerdictKind.NAK, (type(option)(mine),))
                    )
            elif isinstance(option, VpnIpAddresses):
                if tuple(vpn_asked) == vpn_expected:
                    verdicts.append(ACK)
                else:
                    # The whole membership replaces the first VPN option asked; the others add nothing.
                    verdicts.append(Verdict(VerdictKind.NAK, vpn_expected if vpn_first else ()))
                vpn_first = False
            else:
                verdicts.append(REJECT)  # VJ compression, NBNS, unknown, malformed
        return verdicts

    def nak_additions(self, options: Sequence[Received]) -> tuple[Option, ...]:
        """A CE that did not ask for an address is told it once, appended to a Nak (as pppd does)."""
        if self._address_appended or any(isinstance(o, IpAddress | IpAddresses) for o in options):
            return ()
        self._address_appended = True
        return (IpAddress(self.ce_address),)

    def peer_acked(self, options: Sequence[Option]) -> None:
        vpn = [o for o in options if isinstance(o, VpnIpAddresses)]
        self._given_vpns = _vpn_tuple(apply_vpn_options(vpn))

    def our_acked(self, options: Sequence[Option]) -> None:
        pass

    def our_naked(self, options: Sequence[Received]) -> None:
        pass  # our address is ours to choose; the request stays the same

    def our_rejected(self, options: Sequence[RawOption]) -> None:
        pass  # we insist on our address; Max-Configure ends a negotiation that cannot converge

    def layer_up(self) -> list[PppEvent]:
        return [PeerConfigured(self.ce_address, self._given_vpns)]

    def layer_down(self) -> list[PppEvent]:
        self._address_appended = False  # a renegotiation may append it again
        return []

    def link_down(self) -> None:
        """The line is gone: a pooled address goes back to the pool."""
        if self.config.pool is not None and self._ce is not None:
            self.config.pool.release(self.config.link)
            self._ce = None
