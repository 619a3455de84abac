"""The client's configuration: one frozen value, checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from options.vpn import DEFAULT_PEER_CE_CODE, DEFAULT_VPN_SERVER_CODE

__all__ = ["ClientConfig"]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How one CE speaks DHCP on one interface.

    With ``key`` (and ``secret_id``) the client uses RFC 3118 delayed authentication and
    never falls back to unauthenticated replies; without, it offers RFC 6704 nonce
    authentication for FORCERENEW (``nonce_capable``). ``key`` never appears in ``repr``.
    """

    hardware_address: bytes
    secret_id: int | None = None
    key: bytes | None = field(default=None, repr=False)
    htype: int = 1
    client_id: bytes | None = None  # option 61 payload (type octet + identifier); off by default
    hostname: str | None = None
    nonce_capable: bool = True
    peer_ce_code: int = DEFAULT_PEER_CE_CODE
    vpn_server_code: int = DEFAULT_VPN_SERVER_CODE
    #: Option 57: replies may be this large (a 1,000-CE Peer-CE list needs about 4 KB).
    max_message_size: int = 1500
    #: A DHCPINFORM reply naming more VPNs, or more peers in one VPN, is refused as hostile.
    max_vpns: int = 64
    max_peers_per_vpn: int = 4096
    #: RFC 2131 4.4.1 suggests a random 1-10 s wait before the first DISCOVER.
    initial_delay: float = 0.0
    #: Retransmissions of a REQUEST (SELECTING), a reboot REQUEST and an INFORM before giving up.
    request_retries: int = 4
    reboot_retries: int = 2
    inform_retries: int = 4
    #: RFC 2131 3.1: wait "a minimum of ten seconds" after a DECLINE.
    decline_wait: float = 10.0
    #: Ask for VPN data with DHCPINFORM once bound, after a FORCERENEW and after each renewal.
    inform: bool = True
    inform_on_renew: bool = True
    #: RFC 2131 4.1: set while the client has no address, so replies come broadcast.
    broadcast_flag: bool = True
    parameter_request_list: tuple[int, ...] = (1, 3, 6, 15, 51, 54, 58, 59)

    def __post_init__(self) -> None:
        if not 1 <= len(self.hardware_address) <= 16:
            raise ValueError("hardware address is 1 to 16 octets")
        if (self.key is None) != (self.secret_id is None):
            raise ValueError("RFC 3118: give both a secret ID and a key, or neither")
        if self.secret_id is not None and not 0 <= self.secret_id <= 0xFFFFFFFF:
            raise ValueError("the secret ID is 32 bits")
        if self.key is not None and not self.key:
            raise ValueError("the key is empty")
        if not 576 <= self.max_message_size <= 65535:
            raise ValueError("max_message_size is 576..65535 (RFC 2132 9.10)")
        if self.max_vpns < 1 or self.max_peers_per_vpn < 1:
            raise ValueError("max_vpns and max_peers_per_vpn are at least 1")
        if min(self.request_retries, self.reboot_retries, self.inform_retries) < 0:
            raise ValueError("retry counts are not negative")
        if self.initial_delay < 0 or self.decline_wait < 0:
            raise ValueError("delays are not negative")
        if self.client_id is not None and len(self.client_id) < 2:
            raise ValueError("RFC 2132 9.14: a client identifier is a type and at least one octet")

    @property
    def authenticated(self) -> bool:
        return self.key is not None
