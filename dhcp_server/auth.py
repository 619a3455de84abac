"""RFC 3118 delayed authentication, as the server applies it to each client message.

"Clients that authenticate are held to it": a message that carries a MAC is dropped
when the MAC, the key or the replay value is wrong, whatever the subnet's policy. The
policy decides only what happens to clients that do not authenticate.
"""

from __future__ import annotations

import hmac
import struct
from typing import Final, NamedTuple

from dhcp_server.directory import Directory
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey
from options import DecodeError, DhcpMessage, MessageType
from options.rfc3118 import (
    MAC_SIZE,
    RDM_MONOTONIC,
    AuthAlgorithm,
    Authentication,
    AuthProtocol,
    MacKey,
    compute_mac,
    locate_authentication,
    sign,
)

__all__ = ["AuthVerdict", "Credentials", "check_request", "sign_reply"]

_AUTH_HEAD: Final = struct.Struct("!BBBQ")
_ZERO_MAC: Final = bytes(MAC_SIZE)

#: Messages that may ask for authentication without proving anything yet (RFC 3118 5.3:
#: the client "requests authentication" in DHCPDISCOVER; dhcpcd does the same in INFORM).
_MAY_REQUEST_ONLY = frozenset({MessageType.DHCPDISCOVER, MessageType.DHCPINFORM})


class Credentials(NamedTuple):
    """The key the server signs a client's replies with.

    A NamedTuple, not a frozen dataclass: one is built per authenticated message, and a
    tuple is several times cheaper to build. ``repr`` never shows the key.
    """

    protocol: int
    realm: bytes
    secret_id: int
    key: MacKey

    def __repr__(self) -> str:
        return (
            f"Credentials(protocol={self.protocol}, realm={self.realm!r}, "
            f"secret_id={self.secret_id}, key=<hidden>)"
        )

    def payload(self, replay_detection: int) -> bytes:
        """Option 90 of a reply, MAC zeroed until :func:`sign_reply`, encoded straight from its
        fields (every reply to an authenticating client carries one)."""
        return (
            _AUTH_HEAD.pack(self.protocol, AuthAlgorithm.HMAC_MD5, RDM_MONOTONIC, replay_detection)
            + self.realm
            + self.secret_id.to_bytes(4, "big")
            + _ZERO_MAC
        )


class AuthVerdict(NamedTuple):
    """What the server may do with a client message, authentication-wise.

    ``drop`` names the counter when the message must be ignored. ``authenticated`` means
    it carried a valid MAC, ``replay`` the value to record, ``sign_with`` how to sign
    replies (also set for a DISCOVER/INFORM that asked for authentication).
    """

    drop: str | None = None
    authenticated: bool = False
    replay: int | None = None
    sign_with: Credentials | None = None
    ce: CeRecord | None = None


_DROP_MISSING = AuthVerdict(drop="auth_missing")
_UNAUTHENTICATED = AuthVerdict()


def check_request(
    msg: DhcpMessage,
    *,
    message_type: MessageType,
    client: ClientKey,
    auth: Authentication | None,
    policy: AuthPolicy,
    directory: Directory,
    last_replay: int | None,
    realm: bytes,
) -> AuthVerdict:
    """Decide on one client message. ``auth`` is its option 90, already read."""
    if policy is AuthPolicy.OFF:
        return _UNAUTHENTICATED
    if auth is None:
        return _DROP_MISSING if policy is AuthPolicy.REQUIRED else _UNAUTHENTICATED
    delayed = auth.protocol in (AuthProtocol.DELAYED, AuthProtocol.DELAYED_REALM)
    if not delayed or auth.algorithm != AuthAlgorithm.HMAC_MD5 or auth.rdm != RDM_MONOTONIC:
        if policy is AuthPolicy.REQUIRED:
            return AuthVerdict(drop="auth_unsupported")
        return _UNAUTHENTICATED
    if not auth.has_mac:
        if message_type not in _MAY_REQUEST_ONLY:
            return _DROP_MISSING if policy is AuthPolicy.REQUIRED else _UNAUTHENTICATED
        ce = directory.ce_by_client(client)
        key = directory.mac_key(ce.secret_id) if ce is not None and ce.secret_id is not None else None
        if ce is None or ce.secret_id is None or key is None:
            return (
                AuthVerdict(drop="auth_unknown_client") if policy is AuthPolicy.REQUIRED else _UNAUTHENTICATED
            )
        return AuthVerdict(sign_with=Credentials(auth.protocol, realm, ce.secret_id, key), ce=ce)
    secret_id = auth.secret_id
    assert secret_id is not None  # has_mac implies it
    key = directory.mac_key(secret_id)
    if key is None:
        return AuthVerdict(drop="auth_unknown_secret")
    if not _mac_matches(msg.wire, key):
        return AuthVerdict(drop="auth_failed")
    ce = directory.ce_by_secret(secret_id)
    if ce is None or (ce.client is not None and ce.client != client):
        return AuthVerdict(drop="auth_identity_mismatch")
    if last_replay is not None and auth.replay_detection <= last_replay:
        return AuthVerdict(drop="replay")
    return AuthVerdict(
        authenticated=True,
        replay=auth.replay_detection,
        sign_with=Credentials(auth.protocol, auth.realm, secret_id, key),
        ce=ce,
    )


def _mac_matches(payload: bytes, key: MacKey) -> bool:
    """The MAC check of :func:`options.rfc3118.verify`, for an option 90 already read and checked."""
    try:
        _, end = locate_authentication(payload)
    except DecodeError:
        return False  # split or repeated option 90: never authenticated
    expected = compute_mac(payload, key, end - MAC_SIZE)
    return hmac.compare_digest(expected, payload[end - MAC_SIZE : end])


def sign_reply(payload: bytes, credentials: Credentials) -> bytes:
    """Fill in the MAC of an encoded reply that carries ``credentials.payload(...)``."""
    return sign(payload, credentials.key)
