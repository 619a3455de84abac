"""RFC 3118 authentication for DHCP messages (option 90).

Covers the configuration token (protocol 0), delayed authentication (protocol 1), the
realm variant dhcpcd calls ``delayedrealm`` (protocol 2: realm, secret ID, MAC) and the
RFC 6704 reconfigure key (protocol 3, see :mod:`options.rfc6704`).

MACs are computed and checked over the message bytes, never over a re-encoding:
"the HMAC is computed over the entire DHCP message ... with the 'giaddr' and 'hops'
fields set to zero" and the MAC field itself zeroed (RFC 3118 section 5.1; confirmed
against dhcpcd 9.4.1, which also covers END and any trailing PAD).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Protocol

from options.errors import DecodeError
from options.registry import DEFAULT_REGISTRY
from options.rfc3396 import scan_field
from options.spec import OptionSpec

__all__ = [
    "AUTHENTICATION",
    "MAC_SIZE",
    "RDM_MONOTONIC",
    "AuthAlgorithm",
    "AuthCheck",
    "AuthProtocol",
    "Authentication",
    "KeyLookup",
    "MacKey",
    "StaticKeys",
    "compute_mac",
    "locate_authentication",
    "sign",
    "verify",
    "verify_token",
]

MAC_SIZE: Final = 16
#: Replay detection method 0: "a monotonically increasing counter" (RFC 3118 section 2).
RDM_MONOTONIC: Final = 0
_HEAD: Final = struct.Struct("!BBBQ")
_HOPS: Final = 3
_ZERO4: Final = bytes(4)
_ZERO_MAC: Final = bytes(MAC_SIZE)


class AuthProtocol(IntEnum):
    CONFIGURATION_TOKEN = 0
    DELAYED = 1
    DELAYED_REALM = 2
    RECONFIGURE_KEY = 3  # RFC 6704 / RFC 3315 section 21.5


class AuthAlgorithm(IntEnum):
    NONE = 0  # the configuration token protocol
    HMAC_MD5 = 1


@dataclass(frozen=True, slots=True)
class Authentication:
    """The value of option 90.

    ``information`` is everything after the replay detection field: empty in a delayed
    DISCOVER or INFORM; secret ID and MAC for protocol 1; realm, secret ID and MAC for
    protocol 2; a type octet and 16 octets for protocol 3; the token for protocol 0.
    """

    protocol: int
    algorithm: int
    rdm: int
    replay_detection: int
    information: bytes = b""

    def __post_init__(self) -> None:
        for name in ("protocol", "algorithm", "rdm"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} is not an octet")
        if not 0 <= self.replay_detection < 1 << 64:
            raise ValueError("replay detection is a 64-bit value")
        problem = _information_problem(self.protocol, self.information)
        if problem:
            raise ValueError(problem)

    @classmethod
    def delayed(
        cls, replay_detection: int, secret_id: int | None = None, realm: bytes = b""
    ) -> Authentication:
        """Delayed authentication: no credentials (DISCOVER, INFORM) or a secret ID and a MAC to fill.

        With a realm the protocol is 2 (dhcpcd ``delayedrealm``), else 1.
        """
        protocol = AuthProtocol.DELAYED_REALM if realm else AuthProtocol.DELAYED
        info = b"" if secret_id is None else realm + secret_id.to_bytes(4, "big") + bytes(MAC_SIZE)
        return cls(protocol, AuthAlgorithm.HMAC_MD5, RDM_MONOTONIC, replay_detection, info)

    @classmethod
    def token(cls, replay_detection: int, token: bytes) -> Authentication:
        """RFC 3118 section 4: a shared token sent in clear; protects against accidents, not attacks."""
        return cls(
            AuthProtocol.CONFIGURATION_TOKEN, AuthAlgorithm.NONE, RDM_MONOTONIC, replay_detection, token
        )

    @property
    def has_mac(self) -> bool:
        return _has_mac(self.protocol, len(self.information), self.information[:1])

    @property
    def secret_id(self) -> int | None:
        if (
            self.protocol in (AuthProtocol.DELAYED, AuthProtocol.DELAYED_REALM)
            and len(self.information) >= 20
        ):
            return int.from_bytes(self.information[-20:-16], "big")
        return None

    @property
    def realm(self) -> bytes:
        if self.protocol == AuthProtocol.DELAYED_REALM and len(self.information) >= 20:
            return self.information[:-20]
        return b""

    @property
    def mac(self) -> bytes | None:
        return self.information[-MAC_SIZE:] if self.has_mac else None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "protocol": self.protocol,
            "algorithm": self.algorithm,
            "rdm": self.rdm,
            "replay_detection": self.replay_detection,
        }
        if self.secret_id is not None:
            out["secret_id"] = self.secret_id
        if self.realm:
            out["realm"] = self.realm.decode("utf-8", "backslashreplace")
        if self.protocol == AuthProtocol.RECONFIGURE_KEY:
            out["type"] = self.information[0]
        if self.mac is not None:
            out["mac"] = self.mac.hex()
        return out


def _has_mac(protocol: int, information_size: int, first_octet: bytes) -> bool:
    if protocol in (AuthProtocol.DELAYED, AuthProtocol.DELAYED_REALM):
        return information_size >= 20
    return protocol == AuthProtocol.RECONFIGURE_KEY and first_octet == b"\x02"


def _information_problem(protocol: int, info: bytes) -> str | None:
    size = len(info)
    if protocol == AuthProtocol.DELAYED and size not in (0, 20):
        return f"delayed authentication information is {size} octets, not 0 or 20 (secret ID + MAC)"
    if protocol == AuthProtocol.DELAYED_REALM and size not in (0,) and size < 20:
        return f"delayed authentication with realm is {size} octets, below secret ID + MAC"
    if protocol == AuthProtocol.RECONFIGURE_KEY and (size != 17 or info[0] not in (1, 2)):
        return "RFC 6704 reconfigure key information is a type octet (1 or 2) and 16 octets"
    return None


_set: Final = object.__setattr__  # frozen dataclass fields, set once when decoding


class AuthenticationSpec(OptionSpec[Authentication]):
    __slots__ = ()

    def validate(self, data: bytes) -> None:
        size = len(data)
        # Fast accept for the shapes seen on every authenticated exchange.
        if (size == 11 and data[0] != AuthProtocol.RECONFIGURE_KEY) or (size == 31 and data[0] <= 2):
            return
        if size < 11:
            raise DecodeError(f"authentication: length {size} is below the minimum 11", 0)
        problem = _information_problem(data[0], data[11:])
        if problem:
            raise DecodeError(f"authentication: {problem}", 11)

    def decode(self, data: bytes) -> Authentication:
        self.validate(data)
        # validate() checked everything __post_init__ would (the head fields are octets
        # and a 64-bit value by construction): build without checking twice, as this runs
        # on every authenticated message a server receives.
        protocol, algorithm, rdm, replay = _HEAD.unpack_from(data)
        value = object.__new__(Authentication)
        _set(value, "protocol", protocol)
        _set(value, "algorithm", algorithm)
        _set(value, "rdm", rdm)
        _set(value, "replay_detection", replay)
        _set(value, "information", bytes(data[11:]))
        return value

    def encode(self, value: Authentication) -> bytes:
        return (
            _HEAD.pack(value.protocol, value.algorithm, value.rdm, value.replay_detection) + value.information
        )


AUTHENTICATION = DEFAULT_REGISTRY.register(AuthenticationSpec(90, "authentication"))


def locate_authentication(payload: bytes) -> tuple[int, int]:
    """The ``(start, end)`` of option 90's value in a DHCP payload.

    Raises :class:`DecodeError` when it is absent, or present more than once: a MAC is
    checked in place, so an option split into instances cannot be authenticated (dhcpcd
    refuses such messages too).
    """
    if len(payload) < 240:
        raise DecodeError("message too short to carry options", len(payload))
    spans: list[tuple[int, int, int]] = []
    scan_field(payload, 240, len(payload), spans)
    overload = 0
    found: list[tuple[int, int]] = []
    for code, start, end in spans:
        if code == 90:
            found.append((start, end))
        elif code == 52 and end - start == 1:
            overload = payload[start]
    if overload & 1:
        found += _instances_of(payload, 108, 236, 90)
    if overload & 2:
        found += _instances_of(payload, 44, 108, 90)
    if not found:
        raise DecodeError("no authentication option", 240)
    if len(found) > 1:
        raise DecodeError("authentication option appears more than once", found[1][0])
    return found[0]


def _instances_of(payload: bytes, start: int, end: int, code: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int, int]] = []
    scan_field(payload, start, end, spans)
    return [(s, e) for c, s, e in spans if c == code]


_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


class MacKey:
    """An HMAC-MD5 key with its padded inner and outer blocks hashed once.

    RFC 2104 section 4 suggests it: a server verifying and signing for the same client
    on every message saves half of each HMAC's cost (1.3 us of 2.7 here). ``repr`` never
    shows the key; it is not kept, only the two hash states derived from it.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        # HMAC-MD5 is what RFC 3118 delayed authentication specifies (algorithm 1).
        if len(key) > 64:
            key = hashlib.md5(key).digest()  # noqa: S324
        block = key.ljust(64, b"\0")
        self._inner = hashlib.md5(block.translate(_IPAD))  # noqa: S324
        self._outer = hashlib.md5(block.translate(_OPAD))  # noqa: S324

    def digest(self, data: bytes) -> bytes:
        """``hmac.digest(key, data, "md5")``."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "MacKey(<hidden>)"


def compute_mac(payload: bytes, key: bytes | MacKey, mac_start: int) -> bytes:
    """HMAC-MD5 over ``payload`` with hops, giaddr and the MAC field zeroed."""
    zeroed = b"".join(
        (
            payload[:_HOPS], b"\0", payload[_HOPS + 1 : 24], _ZERO4, payload[28:mac_start],
            _ZERO_MAC, payload[mac_start + MAC_SIZE :],
        )
    )  # fmt: skip
    if isinstance(key, MacKey):
        return key.digest(zeroed)
    return hmac.digest(key, zeroed, "md5")


def sign(payload: bytes, key: bytes | MacKey) -> bytes:
    """``payload`` with the MAC of its authentication option filled in.

    Sign the final bytes (padding included): the MAC covers everything sent.
    """
    start, end = locate_authentication(payload)
    if not _has_mac(payload[start], end - start - 11, payload[start + 11 : start + 12]):
        raise ValueError("the authentication option has no MAC field to fill")
    mac_start = end - MAC_SIZE
    mac = compute_mac(payload, key, mac_start)
    return payload[:mac_start] + mac + payload[end:]


class KeyLookup(Protocol):
    """Where verification finds the key for a message's credentials."""

    def key_for(self, auth: Authentication) -> bytes | None: ...


class StaticKeys:
    """Keys by secret ID (and realm), held in memory. ``repr`` never shows them."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[int, bytes] | Mapping[tuple[bytes, int], bytes]) -> None:
        self._keys: dict[object, bytes] = dict(keys.items())

    def key_for(self, auth: Authentication) -> bytes | None:
        sid = auth.secret_id
        if sid is None:
            return None
        return self._keys.get((auth.realm, sid)) or self._keys.get(sid)

    def __repr__(self) -> str:
        return f"StaticKeys(<{len(self._keys)} keys>)"


@dataclass(frozen=True, slots=True)
class AuthCheck:
    """The outcome of checking one message's option 90."""

    valid: bool
    reason: str
    auth: Authentication | None = None


def verify(payload: bytes, keys: KeyLookup | None = None, *, nonce: bytes | None = None) -> AuthCheck:
    """Check the MAC of a received DHCP payload.

    Delayed authentication (1, 2) looks the key up in ``keys``; an RFC 6704 HMAC
    (protocol 3, type 2) uses ``nonce``. The comparison is constant-time. Replay
    detection is the caller's: it needs state (compare ``auth.replay_detection`` with the
    last value accepted from that peer).
    """
    try:
        start, end = locate_authentication(payload)
        auth = AUTHENTICATION.decode(payload[start:end])
    except DecodeError as exc:
        return AuthCheck(False, exc.reason)
    if auth.algorithm != AuthAlgorithm.HMAC_MD5 or auth.rdm != RDM_MONOTONIC:
        return AuthCheck(False, f"unsupported algorithm {auth.algorithm} or RDM {auth.rdm}", auth)
    if auth.protocol in (AuthProtocol.DELAYED, AuthProtocol.DELAYED_REALM):
        if not auth.has_mac:
            return AuthCheck(False, "no credentials (secret ID and MAC)", auth)
        key = keys.key_for(auth) if keys is not None else None
        if key is None:
            return AuthCheck(False, f"unknown secret ID {auth.secret_id}", auth)
    elif auth.protocol == AuthProtocol.RECONFIGURE_KEY:
        if not auth.has_mac:
            return AuthCheck(False, "reconfigure key carries a nonce, not a MAC", auth)
        if nonce is None:
            return AuthCheck(False, "no RFC 6704 nonce known for this client", auth)
        key = nonce
    else:
        return AuthCheck(False, f"protocol {auth.protocol} carries no MAC", auth)
    expected = compute_mac(payload, key, end - MAC_SIZE)
    if hmac.compare_digest(expected, payload[end - MAC_SIZE : end]):
        return AuthCheck(True, "valid", auth)
    return AuthCheck(False, "MAC mismatch", auth)


def verify_token(payload: bytes, token: bytes) -> AuthCheck:
    """Check a configuration token (protocol 0, RFC 3118 section 4), in constant time.

    The token travels in clear: it keeps misconfigured hosts out, not attackers.
    """
    try:
        start, end = locate_authentication(payload)
        auth = AUTHENTICATION.decode(payload[start:end])
    except DecodeError as exc:
        return AuthCheck(False, exc.reason)
    if auth.protocol != AuthProtocol.CONFIGURATION_TOKEN or auth.algorithm != AuthAlgorithm.NONE:
        return AuthCheck(False, f"protocol {auth.protocol} is not the configuration token", auth)
    if hmac.compare_digest(auth.information, token):
        return AuthCheck(True, "valid", auth)
    return AuthCheck(False, "token mismatch", auth)
