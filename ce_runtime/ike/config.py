"""What charon is told, per peer: the VICI messages are built here (pure, no I/O).

One IKEv2 connection per peer CE, named ``ce-<peer address>``, with one CHILD_SA ``ipip``:
ESP in transport mode whose traffic selectors pick out only IP-in-IP between the two CE
addresses (``L/32[ipencap]`` <-> ``P/32[ipencap]``), as draft-ietf-l3vpn-ce-based-02 section 5
describes for an IP-in-IP tunnel protected by a transport-mode SA.

Decisions (why, in docs/runtime.md, "Keying \"ike\""):

- ``start_action = trap`` on *both* sides: the kernel holds an ``out`` policy for the pair from the
  moment the connection is loaded, so ipip to the peer is never sent in the clear;
- exactly one side initiates: the CE with the *lower* address (:func:`is_initiator`); the backend
  (not charon) does it and retries it, so charon's own retries are off (``keyingtries = 1``) and
  DPD/close only fall back to the trap (``dpd_action = close_action = trap``);
- a fixed ``reqid`` per connection in :data:`IKE_REQID_BASE` .. +2**24 and a fixed policy
  ``priority`` (:data:`IKE_PRIORITY`): SAs and policies charon installs for us are recognisable
  in the kernel (stale ones are flushed after a crash) and invisible to the static runtime's
  planner, whose range is 0xCE000000 .. 0xCEFFFFFF with priority 0xCE00.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

__all__ = [
    "CHILD",
    "IKE_PRIORITY",
    "IKE_REQID_BASE",
    "CertAuth",
    "IkePeer",
    "IkeTimers",
    "PskAuth",
    "conn_name",
    "connection",
    "is_initiator",
    "owned_reqid",
    "peer_of_conn",
    "shared_secret",
    "shared_secret_id",
]

CHILD: Final = "ipip"
CONN_PREFIX: Final = "ce-"
IKE_REQID_BASE: Final = 0xCF000000
IKE_PRIORITY: Final = 0xCF00


@dataclass(frozen=True, slots=True)
class PskAuth:
    """A pre-shared key for the pair (the VPN's or the pair's): never in ``repr``, never logged."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("a pre-shared key of at least 16 octets is required")


@dataclass(frozen=True, slots=True)
class CertAuth:
    """Certificate authentication: this CE's certificate and the CA its peers' certificates chain to.

    The private key and this CE's certificate are loaded into charon once per instance
    (:meth:`ce_runtime.ike.vici_backend.IkeBackend.load_credentials`); here only what the
    connection names: our certificate and the CA (both DER). Identities are the CE addresses,
    which must be subjectAltName IP entries of the certificates.
    """

    cert_der: bytes = field(repr=False)
    ca_der: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class IkePeer:
    """A peer CE in one of our VPNs, and how the pair authenticates."""

    address: IPv4Address
    vpn_id: int
    auth: PskAuth | CertAuth


@dataclass(frozen=True, slots=True)
class IkeTimers:
    """Proposals and timers. Defaults: AES-256-GCM everywhere, X25519, rekey well before expiry."""

    ike_proposals: tuple[str, ...] = ("aes256gcm16-prfsha256-x25519",)
    esp_proposals: tuple[str, ...] = ("aes256gcm16-x25519",)  # PFS on CHILD_SA rekeys
    ike_rekey: int = 4 * 3600  # seconds; charon subtracts a random jitter
    child_rekey: int = 3600
    child_life: int = 3960  # hard expiry: rekey starts child_life - child_rekey (6 min) before it
    dpd_delay: int = 10
    replay_window: int = 64

    def __post_init__(self) -> None:
        if self.child_life <= self.child_rekey:
            raise ValueError("child_life must exceed child_rekey (rekey before expiry)")


def conn_name(peer: IPv4Address) -> str:
    return f"{CONN_PREFIX}{peer}"


def peer_of_conn(name: str) -> IPv4Address | None:
    """The peer of one of our connection names, or None for a name that is not ours."""
    if not name.startswith(CONN_PREFIX):
        return None
    try:
        return IPv4Address(name[len(CONN_PREFIX) :])
    except ValueError:
        return None


def owned_reqid(reqid: int) -> bool:
    return IKE_REQID_BASE <= reqid < IKE_REQID_BASE + (1 << 24)


def is_initiator(local: IPv4Address, peer: IPv4Address) -> bool:
    """The one side of a pair that initiates: the lower address. Both sides compute the same."""
    if local == peer:
        raise ValueError("a CE is not its own peer")
    return local < peer


def shared_secret_id(peer: IPv4Address) -> str:
    return f"ce-psk-{peer}"


def shared_secret(local: IPv4Address, peer: IkePeer) -> dict[str, object]:
    """The ``load-shared`` message for a PSK pair (the key itself: handle the message as a secret).

    The only owner is the peer: charon verifies a peer's AUTH with *every* shared key one of
    whose owners matches either identity, and ours would match all of them. With the peer as the
    only owner a pair's key serves that pair alone (seen in the micro-VM: with our own address
    among the owners, a peer whose key was wrong was accepted with the key of another pair).
    """
    if not isinstance(peer.auth, PskAuth):
        raise TypeError("not a PSK peer")
    return {
        "id": shared_secret_id(peer.address),
        "type": "IKE",
        "data": peer.auth.key,
        "owners": [str(peer.address)],
    }


def connection(
    local: IPv4Address, peer: IkePeer, reqid: int, timers: IkeTimers | None = None
) -> dict[str, object]:
    """The ``load-conn`` message for ``peer``: ``{conn_name(peer): {...}}``."""
    if not owned_reqid(reqid):
        raise ValueError(f"reqid {reqid:#x} outside our range")
    t = timers or IkeTimers()
    remote = str(peer.address)
    local_auth: dict[str, object]
    remote_auth: dict[str, object]
    if isinstance(peer.auth, PskAuth):
        local_auth = {"auth": "psk", "id": str(local)}
        remote_auth = {"auth": "psk", "id": remote}
    else:
        local_auth = {"auth": "pubkey", "id": str(local), "certs": [peer.auth.cert_der]}
        remote_auth = {"auth": "pubkey", "id": remote, "cacerts": [peer.auth.ca_der]}
    child: Mapping[str, object] = {
        "mode": "transport",
        "local_ts": [f"{local}/32[ipencap]"],
        "remote_ts": [f"{remote}/32[ipencap]"],
        "esp_proposals": list(t.esp_proposals),
        "start_action": "trap",
        "dpd_action": "trap",
        "close_action": "trap",
        "rekey_time": f"{t.child_rekey}s",
        "life_time": f"{t.child_life}s",
        "reqid": str(reqid),
        "priority": str(IKE_PRIORITY),
        "replay_window": str(t.replay_window),
        "policies": "yes",
    }
    body: dict[str, object] = {
        "version": "2",
        "local_addrs": [str(local)],
        "remote_addrs": [remote],
        "proposals": list(t.ike_proposals),
        "mobike": "no",
        "encap": "no",
        "keyingtries": "1",
        "unique": "no",
        "rekey_time": f"{t.ike_rekey}s",
        "reauth_time": "0",
        "dpd_delay": f"{t.dpd_delay}s",
        "local": local_auth,
        "remote": remote_auth,
        "children": {CHILD: dict(child)},
    }
    return {conn_name(peer.address): body}
