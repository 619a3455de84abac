"""The CE client library: DHCP with delayed authentication, VPN discovery, FORCERENEW (issue 4).

Three layers: :class:`ClientMachine` (sans-IO, RFC 2131 + RFC 3118 + RFC 6704 + RFC 3203 +
draft-lee INFORM), :class:`ClientDriver` (asyncio, one UDP socket), and the optional
:mod:`dhcp_client.iface` adapter. Embedders subscribe to the events in
:mod:`dhcp_client.events`; see docs/client.md.
"""

from dhcp_client.config import ClientConfig
from dhcp_client.driver import ClientDriver, open_client_socket
from dhcp_client.events import (
    AuthenticationFailure,
    ClientEvent,
    Lease,
    LeaseBound,
    LeaseLost,
    LeaseRenewed,
    VpnPeersChanged,
    VpnServersChanged,
    event_to_json,
)
from dhcp_client.machine import ClientMachine, LocalProtocolError, State, Step, Transmit
from dhcp_client.persistence import ClientState, FileStateStore, MemoryStateStore, StateStore

__all__ = [
    "AuthenticationFailure",
    "ClientConfig",
    "ClientDriver",
    "ClientEvent",
    "ClientMachine",
    "ClientState",
    "FileStateStore",
    "Lease",
    "LeaseBound",
    "LeaseLost",
    "LeaseRenewed",
    "LocalProtocolError",
    "MemoryStateStore",
    "State",
    "StateStore",
    "Step",
    "Transmit",
    "VpnPeersChanged",
    "VpnServersChanged",
    "event_to_json",
    "open_client_socket",
]
