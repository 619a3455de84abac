"""RFC 6704 forcerenew nonce authentication: FORCERENEW protection without a shared key.

The client says it can (option 145); the server's DHCPACK carries a 16-octet nonce in
option 90 protocol 3 type 1; a later FORCERENEW carries type 2, an HMAC-MD5 of the
message keyed with that nonce. dhcpcd requires the OFFER to carry no option 90 at all.
"""

from __future__ import annotations

from typing import Final

from options.registry import DEFAULT_REGISTRY
from options.rfc3118 import MAC_SIZE, RDM_MONOTONIC, AuthAlgorithm, Authentication, AuthProtocol
from options.spec import IntListSpec

__all__ = [
    "FORCERENEW_NONCE_CAPABLE",
    "NONCE_SIZE",
    "TYPE_HMAC",
    "TYPE_NONCE",
    "forcerenew_hmac",
    "nonce_of",
    "reconfigure_nonce",
]

NONCE_SIZE: Final = 16
TYPE_NONCE: Final = 1
TYPE_HMAC: Final = 2

#: Option 145: the algorithms the client supports for nonce authentication (1 = HMAC-MD5).
FORCERENEW_NONCE_CAPABLE = DEFAULT_REGISTRY.register(IntListSpec(145, "forcerenew_nonce_capable", 1))


def reconfigure_nonce(replay_detection: int, nonce: bytes) -> Authentication:
    """The option 90 value that hands a client its nonce (in a DHCPACK)."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError("the RFC 6704 nonce is 16 octets")
    return Authentication(
        AuthProtocol.RECONFIGURE_KEY,
        AuthAlgorithm.HMAC_MD5,
        RDM_MONOTONIC,
        replay_detection,
        bytes((TYPE_NONCE,)) + nonce,
    )


def forcerenew_hmac(replay_detection: int) -> Authentication:
    """The option 90 value of a FORCERENEW, MAC zeroed for :func:`options.rfc3118.sign`."""
    return Authentication(
        AuthProtocol.RECONFIGURE_KEY,
        AuthAlgorithm.HMAC_MD5,
        RDM_MONOTONIC,
        replay_detection,
        bytes((TYPE_HMAC,)) + bytes(MAC_SIZE),
    )


def nonce_of(auth: Authentication) -> bytes | None:
    """The nonce a DHCPACK delivers, or None when ``auth`` is not a type 1 reconfigure key."""
    if auth.protocol == AuthProtocol.RECONFIGURE_KEY and auth.information[0] == TYPE_NONCE:
        return auth.information[1:]
    return None
