"""RFC 3203 DHCP reconfigure extension: the FORCERENEW message.

"The server MUST include a server identifier option" and the message "MUST be
authenticated" (RFC 3203 sections 4 and 6). dhcpcd additionally only acts on a
FORCERENEW whose ``xid`` is the one of its current transaction and whose ``chaddr``
is its own, sent to its leased address (see docs/wire-format.md).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from options.message import BOOTREPLY, DhcpMessage, Options
from options.rfc2132 import MESSAGE_TYPE, SERVER_IDENTIFIER, MessageType
from options.rfc3118 import AUTHENTICATION, Authentication

__all__ = ["build_forcerenew"]


def build_forcerenew(
    *,
    server_id: IPv4Address,
    client_address: IPv4Address,
    chaddr: bytes,
    xid: int,
    auth: Authentication,
    htype: int = 1,
) -> DhcpMessage:
    """A FORCERENEW for one bound client, ready to encode and then sign.

    ``auth`` is option 90 with a zeroed MAC (delayed authentication with the client's
    secret ID, or an RFC 6704 type 2 value); there is deliberately no unauthenticated form.
    """
    if not auth.has_mac:
        raise ValueError("RFC 3203 section 6: a FORCERENEW must be authenticated")
    options = Options(
        [
            MESSAGE_TYPE.item(MessageType.DHCPFORCERENEW),
            SERVER_IDENTIFIER.item(server_id),
            AUTHENTICATION.item(auth),
        ]
    )
    return DhcpMessage(
        op=BOOTREPLY,
        xid=xid,
        htype=htype,
        hlen=len(chaddr),
        ciaddr=client_address,
        chaddr=chaddr,
        options=options,
    )
